//! Cloud accounts: each has a BMS endpoint, the projects it serves and its AK/SK.
//!
//! Lookup by project id is one hash-map read. Credentials are resolved from their `env:`/`file:`
//! references when the gateway starts and are held only as [`Secret`]s.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, ConfigIssue, EMBEDDED_ENDPOINT};
use crate::secret::{Secret, SecretRef};

/// One account the gateway calls the cloud as.
#[derive(Debug)]
pub struct Account {
    pub name: Arc<str>,
    /// Scheme and authority, e.g. `https://bms.cn-north-4.myhuaweicloud.com`.
    pub endpoint: String,
    /// The `Host` value signed and sent: the endpoint's authority (with a port when it has one).
    pub host: String,
    pub access_key: Secret,
    pub secret_key: Secret,
}

/// All accounts, indexed by the projects they serve.
#[derive(Debug, Default)]
pub struct Accounts {
    by_project: HashMap<String, Arc<Account>>,
    names: Vec<String>,
}

impl Accounts {
    /// Resolves every account's credentials. `embedded_endpoint` replaces the `embedded`
    /// placeholder once the in-process simulator is listening.
    pub fn from_config(
        config: &Config,
        embedded_endpoint: Option<&str>,
    ) -> Result<Accounts, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut accounts = Accounts::default();
        for (i, acc) in config.accounts.iter().enumerate() {
            let key = format!("accounts[{i}]");
            let mut resolve = |field: &str, text: &str| {
                SecretRef::parse(text)
                    .and_then(|r| r.resolve(&config.base_dir))
                    .map_err(|e| issues.push(ConfigIssue::new(format!("{key}.{field}"), e)))
                    .ok()
            };
            let access_key = resolve("access_key", &acc.access_key);
            let secret_key = resolve("secret_key", &acc.secret_key);
            let endpoint = if acc.endpoint == EMBEDDED_ENDPOINT {
                embedded_endpoint
                    .unwrap_or("http://127.0.0.1:0")
                    .to_string()
            } else {
                acc.endpoint.trim_end_matches('/').to_string()
            };
            let host = endpoint
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.as_str().to_string()));
            let (Some(access_key), Some(secret_key), Some(host)) = (access_key, secret_key, host)
            else {
                continue;
            };
            let account = Arc::new(Account {
                name: Arc::from(acc.name.as_str()),
                endpoint,
                host,
                access_key,
                secret_key,
            });
            for project in &acc.projects {
                accounts
                    .by_project
                    .insert(project.to_ascii_lowercase(), account.clone());
            }
            accounts.names.push(acc.name.clone());
        }
        if issues.is_empty() {
            Ok(accounts)
        } else {
            Err(issues)
        }
    }

    /// The account that serves a project.
    pub fn for_project(&self, project: &str) -> Option<&Arc<Account>> {
        if project.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_project.get(&project.to_ascii_lowercase())
        } else {
            self.by_project.get(project)
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}
