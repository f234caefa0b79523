//! The cwd and root a dump is read from, opened when it starts (the target may chdir or chroot
//! later) and shared by the dumps that found the same directory: descriptors stay a few per
//! target however many dumps wait to be collected, never one per queued dump.
use crate::collect::TargetDir;
use crate::target::files::DirIdentity;
use std::collections::HashMap;
use std::sync::Arc;

/// The last cwd and root opened for each target, with what they are.
#[derive(Default)]
pub struct DumpDirs {
    last: HashMap<(u32, &'static str), (DirIdentity, Arc<TargetDir>)>,
}

impl DumpDirs {
    /// /proc/PID/`which` as it is now: the handle already held when it is the same directory,
    /// seen through the same mount with the same credentials. The error is said as covobs' own
    /// when it is (no descriptor, no memory); None otherwise (the process is exiting).
    pub fn open(
        &mut self,
        pid: u32,
        which: &'static str,
    ) -> Result<Option<Arc<TargetDir>>, String> {
        let fresh = match TargetDir::open(pid as i32, which) {
            Ok(d) => d,
            Err(e) if crate::target::files::is_own_errno(&e) => {
                return Err(format!("opening /proc/{pid}/{which}: {e}"));
            }
            Err(_) => return Ok(None),
        };
        let Ok(id) = fresh.identity() else {
            return Ok(Some(Arc::new(fresh)));
        };
        if let Some((known, dir)) = self.last.get(&(pid, which))
            && *known == id
        {
            return Ok(Some(dir.clone()));
        }
        let dir = Arc::new(fresh);
        self.last.insert((pid, which), (id, dir.clone()));
        Ok(Some(dir))
    }

    /// The process exited: its handles go (queued dumps keep theirs).
    pub fn forget(&mut self, pid: u32) {
        self.last.retain(|(p, _), _| *p != pid);
    }
}
