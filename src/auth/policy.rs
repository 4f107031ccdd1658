//! Authorization: may this caller open a console on this project's server?
//!
//! The policy is a list of rules from config, read like the security policy they enforce. A
//! rule applies to a caller when every condition it names holds: issuer among its issuers,
//! subject among its subjects, and each named claim holding one of the listed values (string
//! claims, arrays of strings such as `groups` or `roles`, and OAuth's space-separated `scope`
//! matched by word). It covers a target when the project and the server match its lists
//! (exact ids, `*`, or prefix globs such as `cf2a8b97-*`).
//!
//! Any `deny` rule that applies and covers the target refuses, whatever allows it: explicit
//! denials win. Otherwise the first `allow` rule that applies and covers the target grants
//! (with its rate-limit tier); when none does, the answer is deny.
//!
//! A rule may also require a verified TLS client certificate (mutual TLS) with one of the
//! listed subjects; without one such a rule never applies.

use std::sync::Arc;

use serde_json::Value;

use crate::auth::Caller;
use crate::bms::ConsoleTarget;
use crate::config::{PolicyConfig, RuleEffect};

/// The policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow {
        /// Name of the rule that allowed it, for logs and audit.
        rule: Arc<str>,
        /// Rate-limit tier the rule assigns, if any.
        tier: Option<Arc<str>>,
    },
    Deny {
        /// The deny rule that refused, or `None` when no rule allowed (default deny).
        rule: Option<Arc<str>>,
    },
}

/// Whether a `servers` entry is valid: a UUID, `*`, or a prefix of one ending in `*`.
pub fn is_valid_server_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            !prefix.is_empty()
                && prefix.len() < 36
                && prefix.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }
        None => crate::bms::ServerId::parse(pattern).is_ok(),
    }
}

/// One id pattern: exact (case-insensitive, ids are hex) or a prefix glob.
#[derive(Debug)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Pattern {
        match text.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.to_ascii_lowercase()),
            None => Pattern::Exact(text.to_ascii_lowercase()),
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(id) => id.eq_ignore_ascii_case(value),
            Pattern::Prefix(prefix) => value
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
        }
    }
}

/// A set of id patterns, or everything (`*`).
#[derive(Debug)]
enum Matcher {
    Any,
    OneOf(Vec<Pattern>),
}

impl Matcher {
    fn from_list(items: &[String]) -> Matcher {
        if items.is_empty() || items.iter().any(|i| i == "*") {
            Matcher::Any
        } else {
            Matcher::OneOf(items.iter().map(|i| Pattern::parse(i)).collect())
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::OneOf(patterns) => patterns.iter().any(|p| p.matches(value)),
        }
    }
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    effect: RuleEffect,
    /// Issuer names; `None` means any.
    issuers: Option<Vec<String>>,
    /// Subjects are compared exactly (case matters in identities); `None` means any.
    subjects: Option<Vec<String>>,
    claims: Vec<(String, Vec<String>)>,
    projects: Matcher,
    servers: Matcher,
    tier: Option<Arc<str>>,
    /// Client-certificate subjects, compared exactly; `None` means no certificate is needed.
    client_certs: Option<Vec<String>>,
}

/// The compiled policy.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    pub fn from_config(config: &PolicyConfig) -> Policy {
        let any_unless_listed = |list: &[String]| {
            if list.is_empty() || list.iter().any(|s| s == "*") {
                None
            } else {
                Some(list.to_vec())
            }
        };
        let rules = config
            .rules
            .iter()
            .map(|r| Rule {
                name: Arc::from(r.name.as_str()),
                effect: r.effect,
                issuers: any_unless_listed(&r.issuers),
                subjects: any_unless_listed(&r.subjects),
                claims: r
                    .claims
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                projects: Matcher::from_list(&r.projects),
                servers: Matcher::from_list(&r.servers),
                tier: r.rate_limit_tier.as_deref().map(Arc::from),
                client_certs: (!r.client_certs.is_empty()).then(|| r.client_certs.clone()),
            })
            .collect();
        Policy { rules }
    }

    /// The claim names any rule looks at: all a verified caller needs to keep.
    pub fn claim_names(&self) -> std::collections::HashSet<String> {
        self.rules
            .iter()
            .flat_map(|rule| rule.claims.iter().map(|(name, _)| name.clone()))
            .collect()
    }

    /// Decides for one caller and target: a matching deny rule wins, then the first matching
    /// allow rule; default deny.
    pub fn decide(&self, caller: &Caller, target: &ConsoleTarget) -> Decision {
        self.decide_with_client_cert(caller, None, target)
    }

    /// Decides for one caller, the subject of the connection's verified client certificate
    /// (mutual TLS; `None` without one) and a target: a matching deny rule wins, then the first
    /// matching allow rule; default deny.
    pub fn decide_with_client_cert(
        &self,
        caller: &Caller,
        client_cert: Option<&str>,
        target: &ConsoleTarget,
    ) -> Decision {
        let matching = |effect: RuleEffect| {
            self.rules.iter().find(|rule| {
                rule.effect == effect
                    && rule.covers(target)
                    && rule.applies_to(caller)
                    && rule.admits_client_cert(client_cert)
            })
        };
        if let Some(rule) = matching(RuleEffect::Deny) {
            return Decision::Deny {
                rule: Some(rule.name.clone()),
            };
        }
        match matching(RuleEffect::Allow) {
            Some(rule) => Decision::Allow {
                rule: rule.name.clone(),
                tier: rule.tier.clone(),
            },
            None => Decision::Deny { rule: None },
        }
    }
}

impl Rule {
    fn admits_client_cert(&self, client_cert: Option<&str>) -> bool {
        match (&self.client_certs, client_cert) {
            (None, _) => true,
            (Some(accepted), Some(subject)) => accepted.iter().any(|a| a == subject),
            (Some(_), None) => false,
        }
    }

    fn covers(&self, target: &ConsoleTarget) -> bool {
        self.projects.matches(target.project.as_str())
            && self.servers.matches(target.server.as_str())
    }

    fn applies_to(&self, caller: &Caller) -> bool {
        if let Some(issuers) = &self.issuers {
            if !issuers.iter().any(|i| **i == *caller.issuer_name) {
                return false;
            }
        }
        if let Some(subjects) = &self.subjects {
            if !subjects.iter().any(|s| **s == *caller.subject) {
                return false;
            }
        }
        self.claims
            .iter()
            .all(|(name, accepted)| claim_holds_one_of(caller.claims.get(name), name, accepted))
    }
}

/// A claim matches when it is a string equal to an accepted value, an array holding one, or,
/// for OAuth's space-separated `scope`, a string with one among its words.
fn claim_holds_one_of(claim: Option<&Value>, name: &str, accepted: &[String]) -> bool {
    let ok = |v: &str| accepted.iter().any(|a| a == v);
    match claim {
        Some(Value::String(s)) if name == "scope" => s.split(' ').any(ok),
        Some(Value::String(s)) => ok(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(ok),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bms::{ProjectId, ServerId};
    use crate::config::{RuleConfig, RuleEffect};
    use serde_json::json;

    const P: &str = "bbf1946d374b44a0a2a95533562ba954";
    const S: &str = "cf2a8b97-b5c6-47ef-9714-eb27adf26e5b";

    fn caller(sub: &str, claims: Value) -> Caller {
        Caller {
            subject: sub.into(),
            issuer_name: Arc::from("t"),
            claims: Arc::new(claims.as_object().unwrap().clone()),
            expires_at: 0,
        }
    }

    fn target(server: &str) -> ConsoleTarget {
        ConsoleTarget {
            project: ProjectId::parse(P).unwrap(),
            server: ServerId::parse(server).unwrap(),
        }
    }

    fn rule(
        name: &str,
        subjects: &[&str],
        claims: &[(&str, &[&str])],
        servers: &[&str],
    ) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            projects: vec![P.into()],
            servers: servers.iter().map(|s| s.to_string()).collect(),
            rate_limit_tier: None,
            client_certs: Vec::new(),
            effect: RuleEffect::Allow,
            issuers: vec![],
        }
    }

    #[test]
    fn default_deny_and_first_matching_rule_wins() {
        let policy = Policy::from_config(&PolicyConfig {
            rules: vec![
                rule("ops", &[], &[("groups", &["ops"])], &[]),
                rule("alice-one-server", &["alice"], &[], &[S]),
            ],
        });
        let other = "00000000-0000-4000-8000-000000000000";
        assert!(matches!(
            policy.decide(&caller("bob", json!({"groups": ["dev", "ops"]})), &target(other)),
            Decision::Allow { rule, .. } if &*rule == "ops"
        ));
        assert!(matches!(
            policy.decide(&caller("alice", json!({})), &target(S)),
            Decision::Allow { rule, .. } if &*rule == "alice-one-server"
        ));
        assert_eq!(
            policy.decide(&caller("alice", json!({})), &target(other)),
            Decision::Deny { rule: None }
        );
        assert_eq!(
            policy.decide(&caller("mallory", json!({"groups": "opsx"})), &target(S)),
            Decision::Deny { rule: None }
        );
    }

    #[test]
    fn a_client_cert_rule_needs_that_verified_certificate() {
        let mut ops_bot = rule("ops-bot", &["*"], &[], &[]);
        ops_bot.client_certs = vec!["CN=ops-bot, O=Example".into()];
        let policy = Policy::from_config(&PolicyConfig {
            rules: vec![ops_bot],
        });
        let alice = caller("alice", json!({}));
        assert!(matches!(
            policy.decide_with_client_cert(&alice, Some("CN=ops-bot, O=Example"), &target(S)),
            Decision::Allow { rule, .. } if &*rule == "ops-bot"
        ));
        assert_eq!(
            policy.decide_with_client_cert(&alice, Some("CN=other, O=Example"), &target(S)),
            Decision::Deny { rule: None }
        );
        assert_eq!(
            policy.decide(&alice, &target(S)),
            Decision::Deny { rule: None }
        );
    }

    #[test]
    fn scope_claims_match_by_word() {
        let policy = Policy::from_config(&PolicyConfig {
            rules: vec![rule("scoped", &[], &[("scope", &["bms:console"])], &["*"])],
        });
        assert!(matches!(
            policy.decide(
                &caller("x", json!({"scope": "openid bms:console"})),
                &target(S)
            ),
            Decision::Allow { .. }
        ));
        assert_eq!(
            policy.decide(
                &caller("x", json!({"scope": "openid bms:consoles"})),
                &target(S)
            ),
            Decision::Deny { rule: None }
        );
    }

    #[test]
    fn deny_rules_win_and_server_globs_match_by_prefix() {
        let mut deny = rule("no-contractors", &[], &[("roles", &["contractor"])], &[]);
        deny.effect = RuleEffect::Deny;
        let mut by_issuer = rule("corp-only", &["*"], &[], &["cf2a8b97-*"]);
        by_issuer.issuers = vec!["t".into()];
        let policy = Policy::from_config(&PolicyConfig {
            rules: vec![by_issuer, deny],
        });
        assert!(matches!(
            policy.decide(&caller("x", json!({"roles": ["dev"]})), &target(S)),
            Decision::Allow { rule, .. } if &*rule == "corp-only"
        ));
        assert!(matches!(
            policy.decide(&caller("x", json!({"roles": ["dev", "contractor"]})), &target(S)),
            Decision::Deny { rule: Some(rule) } if &*rule == "no-contractors"
        ));
        assert_eq!(
            policy.decide(
                &caller("x", json!({})),
                &target("cf2a8b98-b5c6-47ef-9714-eb27adf26e5b")
            ),
            Decision::Deny { rule: None }
        );
        assert!(is_valid_server_pattern("cf2a8b97-*"));
        assert!(!is_valid_server_pattern("web-*"));
        assert!(!is_valid_server_pattern("cf2a8b97"));
    }
}
