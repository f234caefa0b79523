//! The running kernel's identity, as kcov events record it and the report uses it to find the
//! matching vmlinux: its release and its GNU build id.

/// Identity of the running kernel.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// GNU build id of the running kernel (/sys/kernel/notes), hex; the same note is in vmlinux.
    pub build_id: Option<String>,
}

impl KernelInfo {
    pub fn running() -> Self {
        Self {
            release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            build_id: std::fs::read("/sys/kernel/notes")
                .ok()
                .and_then(|n| gnu_build_id(&n)),
        }
    }
}

/// The NT_GNU_BUILD_ID note in a run of ELF notes (4-byte aligned: namesz, descsz, type, name,
/// desc), as hex.
pub fn gnu_build_id(notes: &[u8]) -> Option<String> {
    let word = |at: usize| -> Option<usize> {
        let b = notes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let align = |n: usize| n.div_ceil(4) * 4;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (namesz, descsz, ty) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name = notes.get(at + 12..at + 12 + namesz)?;
        let desc_at = at + 12 + align(namesz);
        let desc = notes.get(desc_at..desc_at + descsz)?;
        if ty == 3 && name == b"GNU\0" {
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        at = desc_at + align(descsz);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_gnu_build_id_note() {
        let mut notes = Vec::new();
        // An unrelated note first (name "Xen", 4 bytes of desc).
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&1u32.to_le_bytes());
        notes.extend_from_slice(b"Xen\0");
        notes.extend_from_slice(&[1, 2, 3, 4]);
        notes.extend_from_slice(&4u32.to_le_bytes());
        notes.extend_from_slice(&3u32.to_le_bytes());
        notes.extend_from_slice(&3u32.to_le_bytes());
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&[0xab, 0xcd, 0xef, 0]);
        assert_eq!(gnu_build_id(&notes).as_deref(), Some("abcdef"));
        assert_eq!(gnu_build_id(&notes[..20]), None);
    }

    #[test]
    fn this_kernel_has_a_build_id() {
        let k = KernelInfo::running();
        assert!(!k.release.is_empty());
        assert!(
            k.build_id.as_ref().is_some_and(|id| id.len() >= 16),
            "/sys/kernel/notes has the kernel's build id on this kind of machine: {k:?}"
        );
    }
}
