//! JSON text written by hand on the request path (the audit line, the success body), where
//! serde's walk of a small struct costs more than the bytes it writes.
//!
//! Strings follow serde_json's escaping exactly, so hand-written and serde-written text agree
//! byte for byte: a string with nothing to escape is copied whole after one scan, and any other
//! is left to serde_json.

/// Appends `value` as a JSON string, quotes included.
pub fn string(out: &mut Vec<u8>, value: &str) {
    // serde_json escapes exactly the control characters, `"` and `\`.
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// Appends `value` as a JSON string, or `null`.
pub fn optional_string(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_string_is_what_serde_json_writes(value in prop_oneof![
            any::<String>(),
            "[\"\\\\\u{0}-\u{1f}\u{7f}é/a]{0,12}",
        ]) {
            let mut out = Vec::new();
            super::string(&mut out, &value);
            prop_assert_eq!(out, serde_json::to_vec(&value).unwrap());
        }
    }
}
