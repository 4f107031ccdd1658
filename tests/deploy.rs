//! The deployment assets hold together: the Kubernetes manifests parse as YAML with the kinds
//! and the hardening they promise, the ConfigMap's config is a valid gateway config whose ports
//! match the Deployment's, the Secrets hold placeholders only, and every metric the Grafana
//! dashboard and the Prometheus rules query is one a live gateway exports on `/metrics`.
//! (`deploy/validate`, run by `.ci/run`, checks the Prometheus files with promtool and the
//! systemd unit with systemd-analyze.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bms_console_gateway::config::Config;
use common::idp::{Idp, TestKey};
use common::redis_server::{self, SHARED_REDIS};
use common::*;
use serde::Deserialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every YAML document in `deploy/kubernetes/`, by file.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(deploy_dir().join("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
            .map(|doc| {
                Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
            })
            .collect();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(name, docs);
    }
    out
}

fn by_kind<'a>(all: &'a BTreeMap<String, Vec<Value>>, kind: &str) -> Vec<&'a Value> {
    all.values()
        .flatten()
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[test]
fn the_kubernetes_manifests_parse_with_the_expected_kinds_and_hardening() {
    let all = manifests();
    let kinds: BTreeSet<&str> = all
        .values()
        .flatten()
        .map(|d| d["kind"].as_str().expect("every document has a kind"))
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Kustomization",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} in deploy/kubernetes: {kinds:?}"
        );
    }
    // The kustomization lists every other file.
    let kustomization = by_kind(&all, "Kustomization")[0];
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let files: BTreeSet<&str> = all
        .keys()
        .map(String::as_str)
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files);

    let deployment = by_kind(&all, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for side in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][side][resource].is_string(),
                "resources.{side}.{resource}"
            );
        }
    }
    let port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/readyz"),
    ] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
    }

    // The config in the ConfigMap is valid and agrees with the Deployment.
    let configmap = by_kind(&all, "ConfigMap")[0];
    let text = configmap["data"]["gateway.toml"].as_str().unwrap();
    let config = Config::from_toml_str(text, Path::new("/etc/bms-console-gateway"), "configmap")
        .unwrap_or_else(|e| panic!("the ConfigMap's gateway.toml: {e}"));
    assert_eq!(u64::from(config.server.admin_listen.port()), port("admin"));
    assert_eq!(u64::from(config.server.listen.port()), port("https"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace * 1000 > config.server.shutdown_delay_ms + config.server.drain_timeout_seconds * 1000,
        "terminationGracePeriodSeconds must cover the shutdown delay and the drain"
    );

    // Every Secret the pod reads is in the example, and the example holds placeholders only.
    let secrets = by_kind(&all, "Secret");
    let secret_names: BTreeSet<&str> = secrets
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    for secret in &secrets {
        for (key, value) in secret["stringData"].as_object().unwrap() {
            assert!(
                value.as_str().unwrap().contains("REPLACE_WITH"),
                "{key} is not a placeholder"
            );
        }
    }
    let mut referenced: Vec<&str> = container["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["secretRef"]["name"].as_str())
        .collect();
    referenced.extend(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str()),
    );
    referenced.extend(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["secret"]["secretName"].as_str()),
    );
    for name in referenced {
        assert!(
            secret_names.contains(name),
            "secret {name} is not in the example"
        );
    }
    // The Redis URL for several replicas is wired from its Secret.
    assert!(container["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "BMSGW_REDIS_URL"));

    // The Services, the PDB and the HPA select or target the Deployment's pods.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for service in by_kind(&all, "Service") {
        for (k, v) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&labels[k], v);
        }
    }
    let pdb = by_kind(&all, "PodDisruptionBudget")[0];
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    let hpa = by_kind(&all, "HorizontalPodAutoscaler")[0];
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        hpa["spec"]["minReplicas"].as_u64().unwrap()
            > pdb["spec"]["minAvailable"].as_u64().unwrap(),
        "the PDB must leave room to evict a pod"
    );
}

/// The `bmsgw_*` metric names a PromQL expression uses (recording rules, `bmsgw:...`, aside).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("bmsgw_") && !word.contains(':') {
                into.insert(word.clone());
            }
            word.clear();
        }
    }
}

/// Every string under a key named `key`, anywhere in `value`.
fn strings_under(value: &Value, key: &str, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k == key => into.push(s.clone()),
                    _ => strings_under(v, key, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, into)),
        _ => {}
    }
}

/// Metric families on a live gateway's `/metrics`. The gateway shares its limits and URLs
/// through the Redis on 127.0.0.1:6379 and fetches one issuer's keys from a JWKS URL, so the
/// Redis and JWKS metrics are part of the scrape too.
async fn exported_metrics() -> BTreeSet<String> {
    let idp_key = TestKey::es256("deploy");
    let idp = Idp::start(&[&idp_key]).await;
    let prefix = redis_server::unique_prefix("deploy-metrics");
    let key = redis_server::temp_file(
        "cache-key",
        b"kJ3x9+T2vQm8Lw1ZpR6yN4cF7hB0sD5eGaUoXiYtVnM=\n",
    );
    let h = Harness::start(TestConfig {
        extra_rate_limit: "backend = \"redis\"\n".into(),
        extra_cache: format!(
            "backend = \"redis\"\nencryption_key = \"file:{}\"\n",
            key.display()
        ),
        extra_sections: redis_server::redis_section(SHARED_REDIS, &prefix, "timeout_ms = 2000"),
        extra_issuers: format!(
            "[[auth.issuers]]\nname = \"idp\"\nissuer = \"https://idp.deploy.test\"\n\
             audiences = [\"{AUDIENCE}\"]\nalgorithms = [\"ES256\"]\n\
             jwks_url = \"{}\"\nca_file = \"{}\"\n",
            idp.jwks_url(),
            idp.ca_file.display()
        ),
        ..TestConfig::default()
    })
    .await;
    // Move a few counters so the scrape is a real one, not just registrations.
    h.console("alice", LINUX).await;
    let scrape = h.metrics().await;
    redis_server::cleanup(SHARED_REDIS, &prefix).await;
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

fn is_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    exported.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|b| exported.contains(b))
        })
}

#[tokio::test]
async fn the_dashboard_and_the_rules_query_only_metrics_the_gateway_exports() {
    let exported = exported_metrics().await;
    assert!(
        exported.contains("bmsgw_http_requests_total"),
        "{exported:?}"
    );

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/bms-console-gateway.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    strings_under(&dashboard, "expr", &mut exprs);
    strings_under(&dashboard, "definition", &mut exprs);
    assert!(exprs.len() >= 14, "{} queries", exprs.len());
    let mut used = BTreeSet::new();
    for expr in &exprs {
        metric_names(expr, &mut used);
    }
    let unknown: Vec<_> = used.iter().filter(|m| !is_exported(m, &exported)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries unexported {unknown:?}"
    );
    // And it covers the gateway's metrics: every exported family appears in some panel.
    let shown: BTreeSet<String> = used
        .iter()
        .map(|m| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| m.strip_suffix(s).filter(|b| exported.contains(*b)))
                .unwrap_or(m)
                .to_string()
        })
        .collect();
    let missing: Vec<_> = exported.difference(&shown).collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");

    let rules: Value = Value::deserialize(serde_norway::Deserializer::from_str(
        &std::fs::read_to_string(deploy_dir().join("prometheus/rules.yml")).unwrap(),
    ))
    .unwrap();
    let mut rule_exprs = Vec::new();
    strings_under(&rules, "expr", &mut rule_exprs);
    let mut used = BTreeSet::new();
    for expr in &rule_exprs {
        metric_names(expr, &mut used);
    }
    let unknown: Vec<_> = used.iter().filter(|m| !is_exported(m, &exported)).collect();
    assert!(unknown.is_empty(), "the rules query unexported {unknown:?}");
}
