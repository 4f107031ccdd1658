//! `explain`: what the policy decides for a set of claims and a target, and which rule decides,
//! for people writing policy. It runs the same [`Policy`] the server runs, on claims from a file
//! instead of a verified token.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::{Caller, Decision, Policy};
use crate::bms::{ConsoleTarget, ProjectId, ServerId};
use crate::config::Config;

/// The decision, and the text printed for it.
pub struct Explanation {
    pub allowed: bool,
    pub text: String,
}

/// Explains the decision for `claims` (a JSON object) opening `server` in `project`.
pub fn explain(
    config: &Config,
    claims: &str,
    project: &str,
    server: &str,
) -> Result<Explanation, String> {
    let claims: Map<String, Value> = match serde_json::from_str(claims) {
        Ok(Value::Object(map)) => map,
        _ => return Err("the claims file must hold a JSON object".into()),
    };
    let target = ConsoleTarget {
        project: ProjectId::parse(project)
            .map_err(|_| format!("{project:?} is not a project id (32 hex characters)"))?,
        server: ServerId::parse(server)
            .map_err(|_| format!("{server:?} is not a server id (UUID)"))?,
    };
    let subject = claims
        .get(&config.auth.subject_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            format!(
                "the claims have no string {:?} (auth.subject_claim)",
                config.auth.subject_claim
            )
        })?
        .to_string();
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let issuer = config.auth.issuers.iter().find(|i| i.issuer == iss);
    let mut text = String::new();
    let issuer_name = match issuer {
        Some(i) => i.name.clone(),
        None => {
            text.push_str(&format!(
                "note: iss {iss:?} is no configured issuer; the gateway would refuse such a token before the policy\n"
            ));
            String::new()
        }
    };
    let caller = Caller {
        subject: Arc::from(subject.as_str()),
        issuer_name: Arc::from(issuer_name.as_str()),
        claims: Arc::new(claims),
        expires_at: 0,
    };
    let decision = Policy::from_config(&config.policy).decide(&caller, &target);
    text.push_str(&format!(
        "subject: {subject}\nissuer: {}\n",
        if issuer_name.is_empty() {
            "-"
        } else {
            &issuer_name
        }
    ));
    let allowed = matches!(decision, Decision::Allow { .. });
    match decision {
        Decision::Allow { rule, tier } => {
            text.push_str(&format!("decision: allow\nrule: {rule}\n"));
            text.push_str(&format!(
                "rate_limit_tier: {}\n",
                tier.as_deref().unwrap_or("(default)")
            ));
        }
        Decision::Deny { rule: Some(rule) } => {
            text.push_str(&format!("decision: deny\nrule: {rule} (explicit deny)\n"));
        }
        Decision::Deny { rule: None } => {
            text.push_str("decision: deny\nrule: none (no allow rule matches: default deny)\n");
        }
    }
    Ok(Explanation { allowed, text })
}
