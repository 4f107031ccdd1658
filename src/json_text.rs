//! JSON text written by hand on the request path (the audit line, the success body), where
//! serde's walk of a small struct costs more than the bytes it writes.
//!
//! Strings follow serde_json's escaping exactly, so hand-written and serde-written text agree
//! byte for byte: a string with nothing to escape is copied whole after one scan, and any other
//! is left to serde_json.

/// Appends `value` as a JSON string, quotes included.
pub fn string(out: &mut Vec<u8>, value: &str) {
    if nothing_to_escape(value.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

/// True when no byte is one serde_json escapes: the control characters, `"` and `\`.
fn nothing_to_escape(bytes: &[u8]) -> bool {
    let plain = |b: u8| (b >= 0x20) & (b != b'"') & (b != b'\\');
    // Without a branch per byte, so each block is checked a vector at a time.
    let mut blocks = bytes.chunks_exact(16);
    blocks
        .by_ref()
        .all(|block| block.iter().fold(true, |ok, &b| ok & plain(b)))
        && blocks.remainder().iter().all(|&b| plain(b))
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
