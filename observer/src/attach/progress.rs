//! The live progress line of a long attach (stderr, only on a terminal): targets, dumps,
//! artifacts, losses, and the latest coverage figure when the report stage provides one.
use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

use super::session::Session;

pub struct Progress {
    bar: Option<ProgressBar>,
    /// "lines 63.2%" after the latest artifact, when known.
    pub coverage: Option<String>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            coverage: None,
        }
    }

    pub fn line(&self, s: &Session) -> String {
        let c = &s.counters;
        format!(
            "targets {} · dumps {} (asked {}) · artifacts {} · lost {}{}",
            s.targets.len(),
            c.dumps_seen,
            c.dumps_triggered,
            c.artifacts,
            c.lost,
            self.coverage
                .as_deref()
                .map(|v| format!(" · {v}"))
                .unwrap_or_default()
        )
    }

    pub fn update(&mut self, s: &Session) {
        if let Some(bar) = &self.bar {
            bar.set_message(self.line(s));
            bar.tick();
        }
    }

    pub fn finish(&mut self, s: &Session) {
        let line = self.line(s);
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(line),
            None => eprintln!("covobs: {line}"),
        }
    }
}
