//! `docs/openapi.yaml` as the contract tests read it: the operation for a method and path, the
//! response object for a status, and [`Spec::check`], which lists every way one live answer
//! departs from what the spec says about it.
//!
//! `$ref`s are resolved inside the document only (the spec has no external references), and
//! schemas are validated as JSON Schema 2020-12, the dialect of OpenAPI 3.1, with formats
//! checked.

use std::path::Path;

use http::HeaderMap;
use serde_json::Value;

/// Headers any HTTP server sends that the spec does not describe per response.
const TRANSPORT_HEADERS: [&str; 5] = [
    "content-length",
    "date",
    "connection",
    "transfer-encoding",
    "keep-alive",
];

/// One exchange as seen on the wire.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "{}: not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Where an error answer came from: the gateway's own codes must be listed under their exact
/// status; the cloud's are passed on and may fall under a `4XX`/`5XX` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Gateway,
    Cloud,
}

/// Which listener answered: the admin paths are those the spec gives their own `servers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Public,
    Admin,
}

pub struct Spec {
    doc: Value,
}

impl Spec {
    pub fn load() -> Spec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
        let text = std::fs::read_to_string(&path).expect("docs/openapi.yaml");
        let doc: Value = serde_norway::from_str(&text).expect("docs/openapi.yaml is YAML");
        assert_eq!(doc["openapi"], "3.1.0");
        Spec { doc }
    }

    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Follows `$ref`s until the value is not a reference.
    pub fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references: {reference}"));
            value = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {reference}"));
        }
        value
    }

    /// The value with every `$ref` inside it replaced by its target (the spec's schemas are
    /// not recursive, so this ends).
    pub fn inline(&self, value: &Value) -> Value {
        match self.resolve(value) {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.inline(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.inline(v)).collect()),
            other => other.clone(),
        }
    }

    /// The path template of `listener` that `path` (without its query) matches, ignoring one
    /// trailing slash, which the spec's description says the route accepts.
    pub fn path_template(&self, listener: Listener, path: &str) -> Option<&str> {
        let path = path.split('?').next().unwrap_or(path);
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .filter(|(_, item)| item.get("servers").is_some() == (listener == Listener::Admin))
            .map(|(template, _)| template)
            .find(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                parts.len() == segments.len()
                    && parts.iter().zip(&segments).all(|(part, segment)| {
                        (part.starts_with('{') && !segment.is_empty()) || part == segment
                    })
            })
            .map(String::as_str)
    }

    /// The operation object for `method` on `template`.
    pub fn operation(&self, method: &str, template: &str) -> Option<&Value> {
        self.doc["paths"][template].get(method.to_ascii_lowercase())
    }

    /// `POST` on the console route.
    pub fn console_operation(&self) -> &Value {
        self.operation(
            "post",
            "/v1/{project_id}/baremetalservers/{server_id}/remote_console",
        )
        .expect("the console operation")
    }

    /// The response object documented for `status` and the key it is listed under: the exact
    /// status, else its `NXX` range, else `default`.
    pub fn response<'a>(
        &'a self,
        operation: &'a Value,
        status: u16,
    ) -> Option<(String, &'a Value)> {
        let responses = operation["responses"].as_object()?;
        [
            status.to_string(),
            format!("{}XX", status / 100),
            "default".to_string(),
        ]
        .into_iter()
        .find_map(|key| responses.get(&key).map(|r| (key, self.resolve(r))))
    }

    /// The gateway codes a response lists in `x-error-codes`.
    pub fn error_codes(&self, response: &Value) -> Vec<String> {
        response["x-error-codes"]
            .as_array()
            .map(|codes| {
                codes
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Problems with `instance` under `schema` (an empty list when it conforms).
    pub fn schema_errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let schema = self.inline(schema);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }

    /// Every way `answer` to `method path` on `listener` departs from the spec; `origin` says
    /// whose error code an error body carries.
    pub fn check(
        &self,
        listener: Listener,
        method: &str,
        path: &str,
        answer: &Answer,
        origin: Origin,
    ) -> Vec<String> {
        let Some(template) = self.path_template(listener, path) else {
            // Any other path: the spec's one answer for it.
            if answer.status != 404 {
                return vec![format!(
                    "an unmatched path answered {}, not 404",
                    answer.status
                )];
            }
            let response = self.resolve(&self.doc["x-unmatched-path-response"]);
            return self.check_response("404", response, method, answer, origin);
        };
        let Some(operation) = self.operation(method, template) else {
            // A method the path does not list: the spec's one answer for it.
            let Some(response) = self.doc.get("x-unsupported-method-response") else {
                return vec![format!("{method} {template} is not documented")];
            };
            if answer.status != 405 || listener != Listener::Public {
                return vec![format!(
                    "{method} {template} answered {}, not 405",
                    answer.status
                )];
            }
            return self.check_response("405", self.resolve(response), method, answer, origin);
        };
        let Some((key, response)) = self.response(operation, answer.status) else {
            return vec![format!("status {} is not documented", answer.status)];
        };
        self.check_response(&key, response, method, answer, origin)
    }

    /// Every way `answer` departs from one response object, listed under the status `key`.
    pub fn check_response(
        &self,
        key: &str,
        response: &Value,
        method: &str,
        answer: &Answer,
        origin: Origin,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(self.check_body(method, response, answer));
        problems.extend(self.check_headers(response, answer));
        let has_error_body = response["content"].get("application/json").is_some()
            && !method.eq_ignore_ascii_case("HEAD");
        if answer.status >= 400 && origin == Origin::Gateway && has_error_body {
            if key != answer.status.to_string() {
                problems.push(format!(
                    "the gateway's own {} is only covered by the range {key}",
                    answer.status
                ));
            }
            let code = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|body| body["error_code"].as_str().map(str::to_string));
            let listed = self.error_codes(response);
            if !code.as_ref().is_some_and(|c| listed.contains(c)) {
                problems.push(format!(
                    "error code {code:?} is not in x-error-codes {listed:?} of {key}"
                ));
            }
        }
        problems
    }

    fn check_body(&self, method: &str, response: &Value, answer: &Answer) -> Vec<String> {
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if answer.body.is_empty() {
                Vec::new()
            } else {
                vec![format!(
                    "{} documents no body but one came: {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                )]
            };
        };
        if method.eq_ignore_ascii_case("HEAD") {
            return Vec::new();
        }
        let Some(content_type) = answer.header("content-type") else {
            return vec!["no Content-Type".into()];
        };
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        let Some(media) = content.get(media_type) else {
            return vec![format!(
                "Content-Type {content_type} is not one of {:?}",
                content.keys().collect::<Vec<_>>()
            )];
        };
        let instance = if media_type == "application/json" {
            match serde_json::from_slice(&answer.body) {
                Ok(v) => v,
                Err(e) => return vec![format!("the body is not JSON: {e}")],
            }
        } else {
            Value::String(String::from_utf8_lossy(&answer.body).into_owned())
        };
        self.schema_errors(&media["schema"], &instance)
            .into_iter()
            .map(|e| format!("body {instance}: {e}"))
            .collect()
    }

    fn check_headers(&self, response: &Value, answer: &Answer) -> Vec<String> {
        let documented: Vec<(String, &Value)> = response
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(name, header)| (name.to_ascii_lowercase(), self.resolve(header)))
                    .collect()
            })
            .unwrap_or_default();
        let mut problems = Vec::new();
        for (name, header) in &documented {
            match answer.header(name) {
                None if header["required"] == true => {
                    problems.push(format!("required header {name} is missing"))
                }
                None => {}
                Some(value) => {
                    let schema = self.inline(&header["schema"]);
                    let instance = match schema["type"].as_str() {
                        Some("integer") => match value.parse::<i64>() {
                            Ok(n) => Value::from(n),
                            Err(_) => {
                                problems
                                    .push(format!("header {name}: {value:?} is not an integer"));
                                continue;
                            }
                        },
                        _ => Value::String(value.to_string()),
                    };
                    problems.extend(
                        self.schema_errors(&schema, &instance)
                            .into_iter()
                            .map(|e| format!("header {name}: {e}")),
                    );
                }
            }
        }
        for name in answer.headers.keys() {
            let name = name.as_str();
            let described = name == "content-type"
                || TRANSPORT_HEADERS.contains(&name)
                || documented.iter().any(|(d, _)| d == name);
            if !described {
                problems.push(format!(
                    "header {name} is not documented for {}",
                    answer.status
                ));
            }
        }
        problems
    }
}
