//! An audit record as its JSON line, and the record's timestamp.
//!
//! The line is byte for byte what `serde_json` makes of [`AuditRecord`] (a property test holds
//! the two equal), written without serde's per-field machinery: each constant `,"key":` is one
//! copy, and each value goes through [`crate::json_text`]. Under load serde's walk of the
//! record was the larger part of auditing a cached request.
//!
//! The timestamp is RFC 3339 in UTC as the `time` crate writes it, with the date and time of
//! day formatted once a second rather than once a record.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::audit::AuditRecord;
use crate::json_text::{optional_string as optional, string};

/// Appends `record` as one JSON object (no newline) to `out`.
pub fn write(record: &AuditRecord<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"log\":");
    string(out, record.log);
    out.extend_from_slice(b",\"time\":");
    string(out, &record.time);
    out.extend_from_slice(b",\"request_id\":");
    string(out, record.request_id);
    out.extend_from_slice(b",\"subject\":");
    string(out, record.subject);
    out.extend_from_slice(b",\"issuer\":");
    string(out, record.issuer);
    out.extend_from_slice(b",\"client_addr\":");
    optional(out, record.client_addr);
    out.extend_from_slice(b",\"forwarded_for\":");
    optional(out, record.forwarded_for);
    out.extend_from_slice(b",\"project\":");
    string(out, record.project);
    out.extend_from_slice(b",\"server\":");
    string(out, record.server);
    out.extend_from_slice(b",\"decision\":");
    string(out, record.decision);
    out.extend_from_slice(b",\"rule\":");
    optional(out, record.rule);
    out.extend_from_slice(b",\"reason\":");
    optional(out, record.reason);
    out.extend_from_slice(b",\"cache\":");
    optional(out, record.cache);
    out.extend_from_slice(b",\"upstream_request_id\":");
    optional(out, record.upstream_request_id);
    out.extend_from_slice(b",\"status\":");
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", record.status);
    out.extend_from_slice(b",\"url_token_hmac\":");
    optional(out, record.url_token_hmac);
    out.push(b'}');
}

thread_local! {
    /// The last second formatted on this thread, as `YYYY-MM-DDTHH:MM:SS`.
    static LAST_SECOND: Cell<Option<(u64, [u8; 19])>> = const { Cell::new(None) };
}

/// Now, as RFC 3339 in UTC: `2026-12-04T07:00:00.123456789Z`, the fraction without trailing
/// zeros and left out when zero, as the `time` crate writes it.
pub fn now_rfc3339() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since_epoch.as_secs(), since_epoch.subsec_nanos())
}

fn rfc3339(seconds: u64, nanos: u32) -> String {
    let Some(date_time) = LAST_SECOND.with(|last| match last.get() {
        Some((cached, text)) if cached == seconds => Some(text),
        _ => {
            let text = format_second(seconds)?;
            last.set(Some((seconds, text)));
            Some(text)
        }
    }) else {
        return String::new();
    };
    let mut out = String::with_capacity(30);
    // `format_second` made ASCII digits and separators only.
    out.push_str(std::str::from_utf8(&date_time).unwrap_or_default());
    if nanos != 0 {
        // Nine digits, then the trailing zeros off (a non-zero fraction keeps at least one).
        let _ = write!(out, ".{nanos:09}");
        while out.ends_with('0') {
            out.pop();
        }
    }
    out.push('Z');
    out
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second; `None` past what RFC 3339 can write (year 9999).
fn format_second(seconds: u64) -> Option<[u8; 19]> {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()?;
    let text = at
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    text.as_bytes().get(..19)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn time_crate(seconds: u64, nanos: u32) -> String {
        let at = time::OffsetDateTime::from_unix_timestamp(seconds as i64).unwrap()
            + time::Duration::nanoseconds(i64::from(nanos));
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    #[test]
    fn timestamps_read_as_the_time_crate_writes_them() {
        for (seconds, nanos) in [
            (1_796_367_600, 0),
            (1_796_367_600, 100_000_000),
            (1_796_367_600, 123_456_789),
            (1_796_367_601, 5),
            (1_796_367_601, 120_000),
            (0, 999_999_999),
        ] {
            assert_eq!(rfc3339(seconds, nanos), time_crate(seconds, nanos));
        }
        assert!(now_rfc3339().ends_with('Z'));
        // Past year 9999, as before: no timestamp rather than a wrong one.
        assert_eq!(rfc3339(253_402_300_800, 0), "");
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9./:-]{0,40}",
            any::<String>(),
            "[\"\\\\\u{0}-\u{1f}\u{7f}é]{0,8}",
        ]
    }

    proptest! {
        #[test]
        fn a_line_is_what_serde_json_writes(
            strings in proptest::collection::vec(text(), 5),
            optionals in proptest::collection::vec(proptest::option::of(text()), 6),
            status in any::<u16>(),
            seconds in 0u64..253_402_300_799,
            nanos in 0u32..1_000_000_000,
        ) {
            let record = AuditRecord {
                log: "audit",
                time: rfc3339(seconds, nanos),
                request_id: &strings[0],
                subject: &strings[1],
                issuer: &strings[2],
                client_addr: optionals[0].as_deref(),
                forwarded_for: optionals[1].as_deref(),
                project: &strings[3],
                server: &strings[4],
                decision: "issued",
                rule: optionals[2].as_deref(),
                reason: optionals[3].as_deref(),
                cache: Some("hit"),
                upstream_request_id: optionals[4].as_deref(),
                status,
                url_token_hmac: optionals[5].as_deref(),
            };
            let mut line = Vec::new();
            write(&record, &mut line);
            prop_assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
            prop_assert_eq!(record.time, time_crate(seconds, nanos));
        }
    }
}
