//! A session of a real third-party program: `pulldown-cmark` from crates.io, built by
//! `cargo xtask fixtures` with `-C instrument-coverage`, run by `covobs run` on real Markdown
//! (this repository's README and docs, and a page that uses every extension it has), then
//! reported by `covobs report`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{artifacts, covobs_bin, fixture, run_ok};

/// The fixture's name (target/fixtures/bin, llvm-fixtures.json).
pub const PROGRAM: &str = "pulldown-cmark";

/// Markdown that reaches the extensions: tables, footnotes, task lists, math, strikethrough,
/// heading attributes, metadata blocks, smart punctuation, super/subscript, HTML, references.
const EXTENSIONS: &str = r#"---
title: "covobs"
---

# Heading with attributes {#top .wide}

| name | value | *note* |
|:-----|------:|:------:|
| a    | 1     | ~~old~~ |
| b \| c | 2   | `code` |

- [x] done
- [ ] not done
  1. nested
  2. list

Footnote here[^1] and "smart quotes" -- dashes... and a ^superscript^ and ~subscript~.

[^1]: The footnote, with *emphasis* and a [link][ref].

[ref]: https://example.org "Title"

$$x^2 + y^2 = z^2$$ and inline $a_b$.

> A quote
> > nested, with <span>inline html</span> &amp; entities &copy; &#x41;

```rust
fn main() {}
```

    indented code

<div>
block html
</div>

***
Setext heading
==============
![image](img.png) <https://autolink.example> hard  
break\
end
"#;

/// A finished, reported session of the program; `profile` is the file its runtime wrote.
pub struct ThirdPartySession {
    pub out: PathBuf,
    pub profile: PathBuf,
    pub binary: PathBuf,
}

/// Runs the program under `covobs run` in `work` and writes the report (`covobs report`).
pub fn third_party_session(work: &Path) -> ThirdPartySession {
    let binary = fixture(PROGRAM);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut input = String::from(EXTENSIONS);
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for doc in std::iter::once(root.join("README.md")).chain(docs) {
        input.push_str("\n\n");
        input.push_str(&fs::read_to_string(&doc).expect("markdown"));
    }
    let markdown = work.join("input.md");
    fs::write(&markdown, input).expect("input");
    let out = work.join("session");
    let profile = work.join("pulldown-cmark.profraw");
    run_ok(
        Command::new(covobs_bin())
            .args(["run", "--no-report", "--out"])
            .arg(&out)
            .arg("--")
            .arg(&binary)
            .args(["-T", "-F", "-S", "-L", "-P", "-H", "-M", "-m", "-U", "-B"])
            .arg(&markdown)
            .env("LLVM_PROFILE_FILE", &profile),
    );
    run_ok(Command::new(covobs_bin()).arg("report").arg(&out));
    let collected = artifacts(&out);
    assert_eq!(collected.len(), 1, "one exit-time dump");
    assert_eq!(collected[0].runtime(), "llvm");
    assert_eq!(collected[0].meta["valid"], true, "{}", collected[0].meta);
    assert_eq!(
        collected[0].data(),
        fs::read(&profile).expect("the runtime's own profile"),
        "the artifact is what the runtime wrote"
    );
    ThirdPartySession {
        out,
        profile,
        binary,
    }
}
