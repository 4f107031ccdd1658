//! W3C Trace Context: the `traceparent` header a caller's tracing system sends.
//!
//! The gateway does not start traces of its own; it reads the caller's trace id so the access
//! log (and the audit record) of a request can be joined with the caller's trace. A header that
//! does not follow the recommendation (<https://www.w3.org/TR/trace-context/#traceparent-header>)
//! is ignored, as the recommendation asks: a broken header must not fail the request.

use http::HeaderMap;

/// The parts of a valid `traceparent` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex characters, not all zero.
    pub trace_id: String,
    /// The caller's span: 16 lowercase hex characters, not all zero.
    pub parent_id: String,
    pub sampled: bool,
}

impl TraceContext {
    /// Reads the request's `traceparent`; `None` when absent, repeated or malformed.
    pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
        let mut values = headers.get_all("traceparent").iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        TraceContext::parse(value.to_str().ok()?)
    }

    /// Parses `version-traceid-parentid-flags`. Version `00` must be exactly that; a later
    /// version may append fields after another `-`, which are ignored.
    pub fn parse(text: &str) -> Option<TraceContext> {
        let text = text.trim_matches(|c| c == ' ' || c == '\t');
        if text.len() < 55 || !text.is_ascii() {
            return None;
        }
        let (head, rest) = text.split_at(55);
        let mut parts = head.split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lower_hex(version, 2) || version == "ff" {
            return None;
        }
        if (version == "00" && !rest.is_empty()) || (!rest.is_empty() && !rest.starts_with('-')) {
            return None;
        }
        if !lower_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
            return None;
        }
        if !lower_hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
            return None;
        }
        if !lower_hex(flags, 2) {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceContext {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            sampled: flags & 1 == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_is_read() {
        let tc = TraceContext::parse(VALID).unwrap();
        assert_eq!(tc.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tc.parent_id, "00f067aa0ba902b7");
        assert!(tc.sampled);
        // A future version may carry more fields.
        assert!(TraceContext::parse(&format!("01{}-extra", &VALID[2..])).is_some());
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }
}
