//! Label names: they name directories (report/labels/<NAME>/) and appear in JSON and HTML, so
//! only a plain alphabet is taken.

/// The longest label name.
pub const MAX_LEN: usize = 200;

/// `Err` is the one-line reason a name is not a label name.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a label name cannot be empty".into());
    }
    if name.len() > MAX_LEN {
        return Err(format!(
            "label name longer than {MAX_LEN} bytes: {:?}...",
            &name[..name.char_indices().nth(40).map_or(name.len(), |(i, _)| i)]
        ));
    }
    if name.starts_with('.') {
        return Err(format!("label name {name:?} starts with a dot"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:@+=-".contains(*c)))
    {
        return Err(format!(
            "label name {name:?} has {c:?}: letters, digits and ._:@+=- only"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_paths_do_not() {
        for ok in ["t1", "tests::a::b", "interval-000042", "a.b@c+d=e", "X_Y"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\n", ".hidden"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        assert!(check(&"x".repeat(MAX_LEN)).is_ok());
        assert!(check(&"x".repeat(MAX_LEN + 1)).is_err());
    }
}
