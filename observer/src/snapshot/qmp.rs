//! A minimal QMP client (QEMU's JSON machine protocol on a Unix socket): enough to stop and
//! resume a guest around a snapshot, ask whether it runs, and save its physical memory.
//! QMP serves one client at a time: covobs holds the connection only for one command sequence.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP socket {path}: {what}")]
    Protocol { path: PathBuf, what: String },
}

pub struct Qmp {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Qmp {
    /// Connect and leave capabilities negotiation mode.
    pub fn connect(path: &Path) -> Result<Self, QmpError> {
        let io = |source| QmpError::Io {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut q = Self {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(q.protocol(format!("no QMP greeting: {greeting}")));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn protocol(&self, what: String) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            what,
        }
    }

    fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(self.protocol("QEMU closed the connection".into()));
        }
        serde_json::from_str(&line).map_err(|e| self.protocol(format!("not JSON ({e}): {line}")))
    }

    /// Run one command; its `return` value (asynchronous events in between are skipped).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|source| QmpError::Io {
                path: self.path.clone(),
                source,
            })?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(self.protocol(format!("{command}: {e}")));
            }
        }
    }

    /// The host virtual address in QEMU of guest-physical `gpa` (HMP `gpa2hva`), if RAM is there.
    pub fn gpa2hva(&mut self, gpa: u64) -> Result<Option<u64>, QmpError> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": format!("gpa2hva {gpa:#x}") })),
        )?;
        // "Host virtual address for 0x200000 (pc.ram) is 0x7f44d0000000"
        Ok(r.as_str().and_then(parse_gpa2hva))
    }

    /// The `mem-path` of memory backend `id` (`qom-get /objects/ID mem-path`).
    pub fn mem_path(&mut self, id: &str) -> Result<String, QmpError> {
        let r = self.execute(
            "qom-get",
            Some(json!({ "path": format!("/objects/{id}"), "property": "mem-path" })),
        )?;
        r.as_str()
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| self.protocol(format!("memory backend {id} has no mem-path: {r}")))
    }

    /// The first CPU's control registers (HMP `info registers`).
    pub fn registers(&mut self) -> Result<super::paging::Registers, QmpError> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": "info registers" })),
        )?;
        let text = r.as_str().unwrap_or_default();
        super::paging::Registers::parse(text).ok_or_else(|| {
            self.protocol(format!(
                "no CR0, CR3, CR4 and EFER in `info registers`: {text}"
            ))
        })
    }

    /// Whether the guest's CPUs run.
    pub fn running(&mut self) -> Result<bool, QmpError> {
        let status = self.execute("query-status", None)?;
        Ok(status.get("running").and_then(Value::as_bool) == Some(true))
    }
}

fn parse_gpa2hva(text: &str) -> Option<u64> {
    let hex = text.trim().rsplit(" is ").next()?.strip_prefix("0x")?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The QMP socket on a QEMU command line: `-qmp unix:PATH[,...]`, or a `-chardev socket` with
/// a `path=` that a `-mon ...,mode=control` uses.
pub fn socket_from_cmdline(args: &[String]) -> Option<PathBuf> {
    let value = |flag: &str| -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == flag || w[0] == format!("-{flag}"))
            .map(|w| w[1].as_str())
            .collect()
    };
    for q in value("-qmp") {
        if let Some(rest) = q.strip_prefix("unix:") {
            return Some(PathBuf::from(rest.split(',').next().unwrap_or(rest)));
        }
    }
    let opt = |spec: &str, key: &str| -> Option<String> {
        spec.split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    for mon in value("-mon") {
        if opt(mon, "mode").as_deref() != Some("control") {
            continue;
        }
        let Some(id) = opt(mon, "chardev") else {
            continue;
        };
        for c in value("-chardev") {
            if c.starts_with("socket,") && opt(c, "id").as_deref() == Some(id.as_str()) {
                return opt(c, "path").map(PathBuf::from);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn gpa2hva_answers() {
        assert_eq!(
            parse_gpa2hva("Host virtual address for 0x200000 (pc.ram) is 0x7f44d0200000\r\n"),
            Some(0x7f44_d020_0000)
        );
        assert_eq!(
            parse_gpa2hva("No memory is mapped at address 0x80000000\r\n"),
            None
        );
    }

    #[test]
    fn qmp_sockets_on_command_lines() {
        assert_eq!(
            socket_from_cmdline(&args(
                "qemu -m 64M -qmp unix:/tmp/q.sock,server=on,wait=off"
            )),
            Some(PathBuf::from("/tmp/q.sock"))
        );
        assert_eq!(
            socket_from_cmdline(&args(
                "qemu -chardev socket,id=m0,path=/run/m.sock,server=on,wait=off -mon chardev=m0,mode=control"
            )),
            Some(PathBuf::from("/run/m.sock"))
        );
        assert_eq!(
            socket_from_cmdline(&args(
                "qemu -chardev socket,id=m0,path=/run/m.sock -mon chardev=m0,mode=readline"
            )),
            None
        );
        assert_eq!(socket_from_cmdline(&args("qemu -m 64M")), None);
    }
}
