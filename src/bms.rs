//! BMS wire types: the `remote_console` request and response bodies, path parameters, and the
//! parsing of the two error shapes the cloud answers with.
//!
//! The gateway speaks exactly the BMS API to its callers, so an official Huawei SDK pointed at
//! the gateway works unchanged.

use std::fmt;

use http::StatusCode;
use serde::Deserialize;

use crate::error::{GatewayError, UpstreamError};
use crate::strict_json::StrictJson;

/// The only protocol and type the API accepts.
pub const SERIAL: &str = "serial";

/// The exact body the gateway sends upstream. The gateway only ever asks for a serial console,
/// so the bytes (and their hash, for signing) are the same for every request.
pub const UPSTREAM_REQUEST_BODY: &[u8] =
    br#"{"remote_console":{"protocol":"serial","type":"serial"}}"#;

/// Request bodies accepted without a JSON parse (see [`parse_request_body`]).
const CANONICAL_REQUEST_BODIES: [&[u8]; 2] = [
    UPSTREAM_REQUEST_BODY,
    br#"{"remote_console":{"type":"serial","protocol":"serial"}}"#,
];

/// A 32-hex-character project id, lower- or upper-case as the caller sent it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(text: &str) -> Result<ProjectId, GatewayError> {
        if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(ProjectId(text.to_string()))
        } else {
            Err(GatewayError::InvalidProjectId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A server id in the canonical 8-4-4-4-12 UUID form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(String);

impl ServerId {
    pub fn parse(text: &str) -> Result<ServerId, GatewayError> {
        let bytes = text.as_bytes();
        let well_formed = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if well_formed {
            Ok(ServerId(text.to_string()))
        } else {
            Err(GatewayError::InvalidServerId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the route `/v1/{project_id}/baremetalservers/{server_id}/remote_console` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleTarget {
    pub project: ProjectId,
    pub server: ServerId,
}

impl ConsoleTarget {
    /// Validates both ids.
    pub fn parse(project: &str, server: &str) -> Result<ConsoleTarget, GatewayError> {
        Ok(ConsoleTarget {
            project: ProjectId::parse(project)?,
            server: ServerId::parse(server)?,
        })
    }

    /// The target as two numbers, for the caches: case-insensitive, as the cloud treats ids.
    pub fn key(&self) -> TargetKey {
        TargetKey {
            project: hex_to_u128(self.project.as_str()),
            server: hex_to_u128(self.server.as_str()),
        }
    }
}

/// A console target as two 128-bit numbers: what the caches key by. It is 32 bytes held inline
/// (no allocation per lookup, and a fraction of two id strings in each of 100,000 entries), and
/// `ABC…` and `abc…` are one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey {
    project: u128,
    server: u128,
}

impl TargetKey {
    /// The project id in lower case.
    pub fn project_hex(&self) -> String {
        format!("{:032x}", self.project)
    }

    /// The server id in lower case, in its 8-4-4-4-12 form.
    pub fn server_uuid(&self) -> String {
        uuid::Uuid::from_u128(self.server).hyphenated().to_string()
    }
}

/// The value of an id already checked to hold only hex digits (and `-` separators, skipped).
fn hex_to_u128(id: &str) -> u128 {
    id.bytes().fold(0, |value, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return value,
        };
        value << 4 | u128::from(digit)
    })
}

/// Outcome of matching a request path against the one route the gateway serves.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch {
    RemoteConsole(Result<ConsoleTarget, GatewayError>),
    NoRoute,
}

/// Matches the remote_console route (a trailing slash is accepted, as the cloud signs both the
/// same) and validates its path parameters.
pub fn match_route(path: &str) -> RouteMatch {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut parts = trimmed.split('/');
    let shape = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    match shape {
        (
            Some(""),
            Some("v1"),
            Some(project),
            Some("baremetalservers"),
            Some(server),
            Some("remote_console"),
            None,
        ) => RouteMatch::RemoteConsole(ConsoleTarget::parse(project, server)),
        _ => RouteMatch::NoRoute,
    }
}

/// A validated request for a console: today only serial/serial exists.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConsoleKind {
    pub protocol: &'static str,
    pub kind: &'static str,
}

/// Decodes and validates a request body, naming the field that is wrong.
///
/// The body is `{"remote_console":{"protocol":"serial","type":"serial"}}`; other members are
/// ignored. Text that is not JSON, or repeats a key, is [`GatewayError::MalformedBody`]; JSON of
/// any other shape (an array, a `remote_console` that is not an object, a value other than
/// `"serial"`) is [`GatewayError::InvalidField`] naming the field.
pub fn parse_request_body(body: &[u8]) -> Result<ConsoleKind, GatewayError> {
    // Nearly every caller sends one of these exact bytes (the SDKs write the members in either
    // order); each decodes to serial/serial, so the parse below would say the same.
    if CANONICAL_REQUEST_BODIES.contains(&body) {
        return Ok(ConsoleKind {
            protocol: SERIAL,
            kind: SERIAL,
        });
    }
    decode_request_body(body)
}

/// The full decode behind [`parse_request_body`].
fn decode_request_body(body: &[u8]) -> Result<ConsoleKind, GatewayError> {
    let StrictJson(body) = serde_json::from_slice(body).map_err(|_| GatewayError::MalformedBody)?;
    if !body.is_object() {
        return Err(GatewayError::InvalidField {
            field: "remote_console",
            reason: "is required (the body must be a JSON object)",
        });
    }
    let fields = match body.get("remote_console") {
        None | Some(serde_json::Value::Null) => Err(GatewayError::InvalidField {
            field: "remote_console",
            reason: "is required",
        }),
        Some(serde_json::Value::Object(fields)) => Ok(fields),
        Some(_) => Err(GatewayError::InvalidField {
            field: "remote_console",
            reason: "must be an object",
        }),
    }?;
    check_serial(fields.get("protocol"), "remote_console.protocol")?;
    check_serial(fields.get("type"), "remote_console.type")?;
    Ok(ConsoleKind {
        protocol: SERIAL,
        kind: SERIAL,
    })
}

fn check_serial(
    value: Option<&serde_json::Value>,
    field: &'static str,
) -> Result<(), GatewayError> {
    match value {
        None | Some(serde_json::Value::Null) => Err(GatewayError::InvalidField {
            field,
            reason: "is required",
        }),
        Some(serde_json::Value::String(s)) if s == SERIAL => Ok(()),
        Some(_) => Err(GatewayError::InvalidField {
            field,
            reason: "must be \"serial\"",
        }),
    }
}

/// A console URL. It carries a bearer token in its query string, so it never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsoleUrl(Box<str>);

impl ConsoleUrl {
    pub fn new(url: String) -> ConsoleUrl {
        ConsoleUrl(url.into_boxed_str())
    }

    /// The URL itself. Call only where it goes into a success body.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConsoleUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsoleUrl([redacted])")
    }
}

/// Renders the success body `{"remote_console":{"type","protocol","url"}}`, in the cloud's
/// field order.
pub fn render_console(kind: &ConsoleKind, url: &ConsoleUrl) -> Vec<u8> {
    let url = url.expose();
    let mut body = Vec::with_capacity(url.len() + 64);
    body.extend_from_slice(br#"{"remote_console":{"type":"#);
    crate::json_text::string(&mut body, kind.kind);
    body.extend_from_slice(br#","protocol":"#);
    crate::json_text::string(&mut body, kind.protocol);
    body.extend_from_slice(br#","url":"#);
    crate::json_text::string(&mut body, url);
    body.extend_from_slice(b"}}");
    body
}

#[derive(Deserialize)]
struct UpstreamSuccess {
    remote_console: UpstreamSuccessFields,
}

#[derive(Deserialize)]
struct UpstreamSuccessFields {
    url: String,
}

/// Reads a 200 answer from the cloud. A body without an `https://` URL is not a console the
/// gateway will hand out.
pub fn parse_upstream_success(body: &[u8]) -> Result<ConsoleUrl, GatewayError> {
    let parsed: UpstreamSuccess =
        serde_json::from_slice(body).map_err(|_| GatewayError::UpstreamBadResponse)?;
    let url = parsed.remote_console.url;
    if !url.starts_with("https://") || url.len() > 4096 {
        return Err(GatewayError::UpstreamBadResponse);
    }
    Ok(ConsoleUrl::new(url))
}

/// Longest upstream error code passed on to callers.
const MAX_UPSTREAM_CODE: usize = 64;

/// Longest upstream error message passed on to callers.
const MAX_UPSTREAM_MESSAGE: usize = 512;

/// Reads an error answer from the cloud in the order the official SDKs use: flat
/// `error_code`/`error_msg`, then `errorCode`/`errorMsg`, then `code`/`message` (at the top or
/// nested, as in `{"error":{"code","message"}}`), else the status code as the code.
pub fn parse_upstream_error(status: StatusCode, body: &[u8]) -> UpstreamError {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let found = value.as_ref().and_then(find_code_and_message);
    let (code, message) = match found {
        Some((code, message)) => (code, message),
        None => (
            status.as_u16().to_string(),
            status
                .canonical_reason()
                .unwrap_or("upstream error")
                .to_string(),
        ),
    };
    // Trimmed again after the cut: a code cut just after a space would otherwise be re-sent
    // with a trailing space, and read back (by us or by a caller) as a different code.
    let mut code = truncate(code, MAX_UPSTREAM_CODE);
    code.truncate(code.trim_end().len());
    UpstreamError {
        status,
        code,
        message: truncate(message, MAX_UPSTREAM_MESSAGE),
        request_id: None,
    }
}

fn find_code_and_message(value: &serde_json::Value) -> Option<(String, String)> {
    let obj = value.as_object()?;
    for (code_key, msg_key) in [
        ("error_code", "error_msg"),
        ("errorCode", "errorMsg"),
        ("code", "message"),
    ] {
        if let Some(code) = obj.get(code_key) {
            let code = match code {
                serde_json::Value::String(s) => s.trim().to_string(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            if code.is_empty() {
                // No usable code here: the status number stands in (below).
                continue;
            }
            let message = obj
                .get(msg_key)
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_string();
            return Some((code, message));
        }
    }
    obj.values()
        .filter(|v| v.is_object())
        .find_map(find_code_and_message)
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "bbf1946d374b44a0a2a95533562ba954";
    const S: &str = "cf2a8b97-b5c6-47ef-9714-eb27adf26e5b";

    #[test]
    fn the_success_body_is_the_clouds_shape_in_its_field_order() {
        let kind = parse_request_body(UPSTREAM_REQUEST_BODY).unwrap();
        for url in [
            "https://console.example.com/serial/?token=04a1&lang=en",
            "https://console.example.com/\"quoted\"\\\u{1}é",
        ] {
            let body = render_console(&kind, &ConsoleUrl::new(url.to_string()));
            let expected = format!(
                r#"{{"remote_console":{{"type":"serial","protocol":"serial","url":{}}}}}"#,
                serde_json::to_string(url).unwrap()
            );
            assert_eq!(String::from_utf8(body).unwrap(), expected);
        }
    }

    #[test]
    fn route_matches_with_and_without_trailing_slash() {
        for path in [
            format!("/v1/{P}/baremetalservers/{S}/remote_console"),
            format!("/v1/{P}/baremetalservers/{S}/remote_console/"),
        ] {
            match match_route(&path) {
                RouteMatch::RemoteConsole(Ok(t)) => {
                    assert_eq!(t.project.as_str(), P);
                    assert_eq!(t.server.as_str(), S);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_target_key_ignores_case_tells_ids_apart_and_prints_the_ids_back() {
        let target = |p: &str, s: &str| ConsoleTarget::parse(p, s).unwrap();
        let key = target(P, S).key();
        assert_eq!(key, target(&P.to_uppercase(), &S.to_uppercase()).key());
        assert_eq!(key.project_hex(), P);
        assert_eq!(key.server_uuid(), S);
        let other_server = "cf2a8b97-b5c6-47ef-9714-eb27adf26e5c";
        assert_ne!(key, target(P, other_server).key());
        // The project's digits and the server's never mix: swapping halves is another key.
        let zeros = "00000000000000000000000000000000";
        let zero_uuid = "00000000-0000-0000-0000-000000000000";
        let one_uuid = "00000000-0000-0000-0000-000000000001";
        let ones = "00000000000000000000000000000001";
        assert_ne!(target(ones, zero_uuid).key(), target(zeros, one_uuid).key());
    }

    #[test]
    fn bad_path_parameters_are_named() {
        let bad_project = format!("/v1/xyz/baremetalservers/{S}/remote_console");
        assert_eq!(
            match_route(&bad_project),
            RouteMatch::RemoteConsole(Err(GatewayError::InvalidProjectId))
        );
        let bad_server = format!("/v1/{P}/baremetalservers/not-a-uuid/remote_console");
        assert_eq!(
            match_route(&bad_server),
            RouteMatch::RemoteConsole(Err(GatewayError::InvalidServerId))
        );
        assert_eq!(match_route("/v1/x"), RouteMatch::NoRoute);
        assert_eq!(
            match_route(&format!("/v1/{P}/baremetalservers/{S}/remote_console/x")),
            RouteMatch::NoRoute
        );
    }

    #[test]
    fn body_fields_are_checked_and_named() {
        assert!(
            parse_request_body(br#"{"remote_console":{"protocol":"serial","type":"serial"}}"#)
                .is_ok()
        );
        let err = parse_request_body(br#"{"remote_console":{"protocol":"vnc","type":"serial"}}"#)
            .unwrap_err();
        assert!(err.message().contains("remote_console.protocol"));
        let err = parse_request_body(br#"{"remote_console":{"protocol":"serial"}}"#).unwrap_err();
        assert!(err.message().contains("remote_console.type"));
        assert_eq!(
            parse_request_body(b"{nope").unwrap_err(),
            GatewayError::MalformedBody
        );
    }

    #[test]
    fn the_bodies_taken_without_a_parse_are_what_the_parse_accepts() {
        for body in CANONICAL_REQUEST_BODIES {
            assert_eq!(decode_request_body(body), parse_request_body(body));
            assert!(parse_request_body(body).is_ok());
        }
    }

    #[test]
    fn only_the_documented_shape_is_accepted() {
        let field_of = |body: &str| match parse_request_body(body.as_bytes()) {
            Err(GatewayError::InvalidField { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        };
        // serde's derived structs would take these arrays as the two fields, in order.
        assert_eq!(field_of(r#"[["serial","serial"]]"#), "remote_console");
        assert_eq!(
            field_of(r#"{"remote_console":["serial","serial"]}"#),
            "remote_console"
        );
        assert_eq!(field_of(r#"{"remote_console":5}"#), "remote_console");
        assert_eq!(field_of("null"), "remote_console");
        assert_eq!(field_of(r#"{"remote_console":null}"#), "remote_console");
        assert_eq!(
            field_of(r#"{"remote_console":{"protocol":null,"type":"serial"}}"#),
            "remote_console.protocol"
        );
        assert_eq!(
            parse_request_body(
                br#"{"remote_console":{"protocol":"serial","type":"serial","protocol":"vnc"}}"#
            )
            .unwrap_err(),
            GatewayError::MalformedBody,
            "a repeated key could be read two ways"
        );
        assert!(parse_request_body(
            br#"{"remote_console":{"protocol":"serial","type":"serial","extra":1},"x":[]}"#
        )
        .is_ok());
    }

    #[test]
    fn both_upstream_error_shapes_parse() {
        let nested = parse_upstream_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"The server does not exist.","code":"BMS.0040"}}"#,
        );
        assert_eq!(nested.code, "BMS.0040");
        assert_eq!(nested.message, "The server does not exist.");
        let flat = parse_upstream_error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"error_code":"APIGW.0308","error_msg":"throttled","request_id":"x"}"#,
        );
        assert_eq!(flat.code, "APIGW.0308");
        let html = parse_upstream_error(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(html.code, "502");
        let empty = parse_upstream_error(
            StatusCode::CONFLICT,
            br#"{"error_code":" ","error_msg":"x"}"#,
        );
        assert_eq!(empty.code, "409", "an empty code is no code");
    }

    /// Found by the `upstream_response` fuzz target
    /// (`fuzz/regressions/upstream_response/code-cut-at-64-bytes-ends-in-space`): a long code
    /// cut at 64 bytes right after a space was re-sent with the space, and read back without.
    #[test]
    fn a_code_cut_to_length_does_not_end_in_whitespace() {
        let code = format!("IAM.{} tail", "x".repeat(59));
        let body = serde_json::json!({"error_code": code, "error_msg": "m"}).to_string();
        let parsed = parse_upstream_error(StatusCode::BAD_REQUEST, body.as_bytes());
        assert_eq!(parsed.code, format!("IAM.{}", "x".repeat(59)));
        let resent = GatewayError::Upstream(parsed.clone()).body("r");
        let again = parse_upstream_error(StatusCode::BAD_REQUEST, &resent);
        assert_eq!(again.code, parsed.code);
    }

    #[test]
    fn console_urls_never_print() {
        let url = parse_upstream_success(
            br#"{"remote_console":{"type":"serial","protocol":"serial","url":"https://c/?token=abc"}}"#,
        )
        .unwrap();
        assert!(!format!("{url:?}").contains("abc"));
        assert!(parse_upstream_success(br#"{"remote_console":{"url":"http://c/"}}"#).is_err());
    }
}
