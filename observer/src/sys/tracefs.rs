//! tracefs: where it is (mounting it when allowed) and the field layout of tracepoints.
use std::{
    fs,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and could not be mounted at /sys/kernel/tracing ({0}); mount it: mount -t tracefs tracefs /sys/kernel/tracing"
    )]
    NotAvailable(String),
    #[error("tracepoint {0} does not exist in this kernel")]
    NoTracepoint(String),
    #[error("tracepoint {tracepoint} has no field `{field}` in this kernel")]
    NoField { tracepoint: String, field: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting tracefs on /sys/kernel/tracing if it is nowhere yet.
pub fn root() -> Result<PathBuf, TracefsError> {
    if let Some(found) = find() {
        return Ok(found);
    }
    nix::mount::mount(
        Some("tracefs"),
        CANDIDATES[0],
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| TracefsError::NotAvailable(e.desc().to_owned()))?;
    find().ok_or_else(|| TracefsError::NotAvailable("mounted, but has no events/".into()))
}

/// The tracefs root if it is mounted, without trying to mount it.
pub fn find() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// A field of a tracepoint's record.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub offset: u16,
    pub size: u16,
}

/// The parsed `format` file of one tracepoint.
#[derive(Clone, Debug)]
pub struct Format {
    pub tracepoint: String,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn read(root: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let tracepoint = format!("{category}:{name}");
        let path = root.join("events").join(category).join(name).join("format");
        let text = fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                TracefsError::NoTracepoint(tracepoint.clone())
            } else {
                TracefsError::Read { path, source }
            }
        })?;
        Ok(Self {
            fields: parse_fields(&text),
            tracepoint,
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn offset(&self, name: &str) -> Result<u16, TracefsError> {
        self.field(name)
            .map(|f| f.offset)
            .ok_or_else(|| TracefsError::NoField {
                tracepoint: self.tracepoint.clone(),
                field: name.to_owned(),
            })
    }
}

/// Parse lines like `\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;`.
fn parse_fields(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.parse().ok();
                }
            }
            let name = decl?
                .split_whitespace()
                .last()?
                .split('[')
                .next()?
                .to_owned();
            Some(Field {
                name,
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_arrays_and_data_loc() {
        let text = "name: signal_generate\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;\n\
            \tfield:pid_t pid;\toffset:36;\tsize:4;\tsigned:1;\n\
            \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
            \nprint fmt: \"sig=%d\"\n";
        let fields = parse_fields(text);
        let names: Vec<_> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.offset, f.size))
            .collect();
        assert_eq!(
            names,
            [
                ("common_type", 0, 2),
                ("comm", 20, 16),
                ("pid", 36, 4),
                ("filename", 8, 4)
            ]
        );
    }
}
