//! Replays every request in `tests/data/sdk-sign-vectors.json` (signed by the official Huawei
//! Cloud Python SDK, huaweicloudsdkcore 3.1.219) through our signer and demands byte-exact
//! canonical requests, strings to sign and `Authorization` values.
//!
//! How a vector is fed: the SDK signs the headers it holds at signing time, which are
//! `outputs.headers_final` without `Authorization` (the SDK's own additions such as `Host`,
//! `X-Project-Id`, `X-Sdk-Content-Sha256`, `X-Security-Token` and a generated `X-Sdk-Date` are
//! already in there; vector 11 also carries the client's `User-Agent`). Each vector is also fed
//! a second time with the caller's original header values (`inputs.headers`, untrimmed) plus
//! what the SDK added, to pin the trimming rule. Query values in the JSON may be lists
//! (repeated key), booleans (`true`/`false`) or numbers, as the SDK accepts them.

use bms_console_gateway::secret::Secret;
use bms_console_gateway::upstream::signer::{
    self, canonical_query, canonical_request, parse_authorization, parse_query, sign,
    signed_header_names, string_to_sign, verify, SigningRequest,
};
use serde_json::Value;

fn load() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sdk-sign-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("read the vectors file");
    serde_json::from_str(&text).expect("vectors file is JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("unexpected query value {other}"),
    }
}

/// `[[key, value-or-list], ...]` → flat decoded pairs.
fn query_pairs(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for pair in v.as_array().expect("query_params is an array") {
        let key = scalar(&pair[0]);
        match &pair[1] {
            Value::Array(values) => out.extend(values.iter().map(|x| (key.clone(), scalar(x)))),
            value => out.push((key, scalar(value))),
        }
    }
    out
}

fn header_list(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .expect("headers are an object")
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("authorization"))
        .map(|(n, x)| (n.clone(), x.as_str().expect("header value").to_string()))
        .collect()
}

fn body_bytes(v: &Value) -> Vec<u8> {
    match s(v, "kind") {
        "none" => Vec::new(),
        "str" | "bytes-utf8" => s(v, "text").as_bytes().to_vec(),
        kind => panic!("unknown body kind {kind}"),
    }
}

struct Expected {
    signed_headers: Vec<String>,
    canonical_request: String,
    string_to_sign: String,
    authorization: String,
}

fn check(name: &str, req: &SigningRequest, inputs: &Value, expected: &Expected) {
    let sk = Secret::new(s(inputs, "sk"));
    let names = signed_header_names(req);
    assert_eq!(names, expected.signed_headers, "{name}: signed headers");
    let cr = canonical_request(req, &names);
    assert_eq!(cr, expected.canonical_request, "{name}: canonical request");
    let sts = string_to_sign(s(inputs, "x_sdk_date"), &cr);
    assert_eq!(sts, expected.string_to_sign, "{name}: string to sign");
    let auth = sign(req, s(inputs, "ak"), &sk).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(auth, expected.authorization, "{name}: Authorization");
}

#[test]
fn every_sdk_vector_is_reproduced_byte_for_byte() {
    let doc = load();
    assert_eq!(doc["algorithm"], signer::ALGORITHM);
    let vectors = doc["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 11);
    for vector in vectors {
        let name = s(vector, "name");
        let inputs = &vector["inputs"];
        let outputs = &vector["outputs"];
        let parsed = &outputs["authorization_parsed"];
        let expected = Expected {
            signed_headers: parsed["signed_headers"]
                .as_array()
                .expect("signed_headers")
                .iter()
                .map(|h| h.as_str().expect("name").to_string())
                .collect(),
            canonical_request: s(outputs, "canonical_request").to_string(),
            string_to_sign: s(outputs, "string_to_sign").to_string(),
            authorization: s(outputs, "authorization").to_string(),
        };

        let query = query_pairs(&inputs["query_params"]);
        let body = body_bytes(&inputs["body"]);
        let body_hash = s(inputs, "body_sha256");
        if expected
            .canonical_request
            .ends_with(signer::UNSIGNED_PAYLOAD)
        {
            assert_ne!(body_hash, signer::UNSIGNED_PAYLOAD);
        } else {
            assert!(
                expected.canonical_request.ends_with(body_hash),
                "{name}: body hash"
            );
        }

        // 1. The headers the SDK ended up signing (its final headers minus Authorization).
        let finals = header_list(&outputs["headers_final"]);
        let final_refs: Vec<(&str, &str)> = finals
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let req = SigningRequest {
            method: s(inputs, "method"),
            path: s(inputs, "resource_path"),
            query: &query,
            headers: &final_refs,
            body: &body,
        };
        check(name, &req, inputs, &expected);

        // 2. The caller's original values (untrimmed) plus the SDK's additions.
        let mut original = header_list(&inputs["headers"]);
        for (n, v) in header_list(&outputs["headers_added_by_sdk"]) {
            original.retain(|(m, _)| !m.eq_ignore_ascii_case(&n));
            original.push((n, v));
        }
        let original_refs: Vec<(&str, &str)> = original
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        check(
            name,
            &SigningRequest {
                headers: &original_refs,
                ..req
            },
            inputs,
            &expected,
        );

        // 3. The parsed Authorization matches the SDK's own parse, and verifies.
        let auth =
            parse_authorization(&expected.authorization).unwrap_or_else(|| panic!("{name}: parse"));
        assert_eq!(auth.access_key, s(parsed, "access"), "{name}");
        assert_eq!(auth.signed_headers, expected.signed_headers, "{name}");
        assert_eq!(auth.signature, s(parsed, "signature"), "{name}");
        let sk = Secret::new(s(inputs, "sk"));
        assert!(verify(&req, &auth, &sk), "{name}: verify");

        // 4. The SDK sends the canonical query as the URL query; decoding it round-trips.
        let uri_sent = s(outputs, "uri_as_sent");
        let sent_query = uri_sent.split_once('?').map_or("", |(_, q)| q);
        assert_eq!(canonical_query(&query), sent_query, "{name}: query sent");
        let from_wire = parse_query(sent_query);
        let wire_req = SigningRequest {
            query: &from_wire,
            ..req
        };
        assert!(
            verify(&wire_req, &auth, &sk),
            "{name}: verify from the wire"
        );
    }
}

#[test]
fn the_published_doc_example_is_among_the_vectors() {
    let doc = load();
    assert_eq!(doc["doc_example_matches_published_signature"], true);
    let first = &doc["vectors"][0];
    assert!(s(&first["outputs"], "authorization")
        .ends_with("Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"));
}
