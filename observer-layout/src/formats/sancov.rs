//! SanitizerCoverage's `.sancov` file (64-bit magic, then module-relative PCs) and the PC table's
//! flags: written by the snapshot, read by the report.

/// `.sancov` magic for 64-bit PCs.
pub const MAGIC_64: u64 = 0xC0BF_FFFF_FFFF_FF64;
/// `__sancov_pcs` flag of the entry block of a function.
pub const PC_FLAG_FUNC_ENTRY: u64 = 1;

/// AFL's hit-count buckets: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+ (one bit each).
pub fn bucket(count: u8) -> u8 {
    match count {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        128.. => 128,
    }
}

/// Parse a `.sancov` file: the module-relative PCs it lists.
pub fn parse_sancov(bytes: &[u8]) -> Option<Vec<u64>> {
    if bytes.len() < 8 || !bytes.len().is_multiple_of(8) {
        return None;
    }
    let words: Vec<u64> = bytes
        .as_chunks::<8>()
        .0
        .iter()
        .map(|w| u64::from_le_bytes(*w))
        .collect();
    (words[0] == MAGIC_64).then(|| words[1..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_like_afl() {
        let got: Vec<u8> = [0u8, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 127, 128, 255]
            .iter()
            .map(|c| bucket(*c))
            .collect();
        assert_eq!(got, [0, 1, 2, 4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128]);
    }

    #[test]
    fn parses_only_whole_64_bit_files() {
        let mut b = MAGIC_64.to_le_bytes().to_vec();
        b.extend_from_slice(&0x10u64.to_le_bytes());
        assert_eq!(parse_sancov(&b), Some(vec![0x10]));
        assert_eq!(parse_sancov(&b[..12]), None);
        assert_eq!(parse_sancov(&[0; 16]), None);
    }
}
