//! Reading the session's JSON documents (session.json, artifact metadata) against their typed
//! schema: the directory is not trusted (docs/security.md), so an error names the field and never
//! quotes the file.

/// serde's message without the value it quotes (a refused file's content is never repeated) and
/// without serde_json's position.
fn without_values(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full);
    let expected = msg.rsplit_once(", expected ").map(|(_, e)| e);
    if let (Some(rest), Some(expected)) = (msg.strip_prefix("invalid type: "), expected) {
        let found = if rest.starts_with("floating point") {
            "a number with a fraction"
        } else {
            match rest.split([' ', ',']).next().unwrap_or("") {
                "string" => "a string",
                "integer" => "an integer",
                "boolean" => "a boolean",
                "map" => "an object",
                "sequence" => "an array",
                "null" => "null",
                _ => "a value of another type",
            }
        };
        return format!("{found} where {expected} is expected");
    }
    if let (true, Some(expected)) = (msg.starts_with("invalid value: "), expected) {
        return format!("a value out of range: {expected} is expected");
    }
    let names_a_field = msg.starts_with("missing field `") || msg.starts_with("duplicate field `");
    if !names_a_field && (msg.contains('"') || msg.contains('`')) {
        return "an invalid value".into();
    }
    msg.to_string()
}

/// Parse one of the session's JSON documents against its schema: an object whose fields have
/// their types (fields the schema does not list are skipped without being kept). The error names
/// the field (`targets[0].pid`) and never quotes the file.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err("empty: no JSON at all".into()),
        Some(b'{') => {}
        Some(_) => return Err("not a JSON object".into()),
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let why = without_values(inner);
                if path == "." {
                    why
                } else {
                    format!("field `{path}`: {why}")
                }
            }
            serde_json::error::Category::Eof => "truncated: the JSON ends early".into(),
            _ => format!("not valid JSON ({inner})"),
        }
    })?;
    de.end().map_err(|e| format!("not valid JSON ({e})"))?;
    Ok(value)
}
