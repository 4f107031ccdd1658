//! TLS termination on the public listener.
//!
//! The certificate chain and key (and, for mutual TLS, the client CA bundle) are read from PEM
//! files into a rustls `ServerConfig` that offers TLS 1.2 and 1.3 only and ALPN `h2` and
//! `http/1.1`. A watcher re-reads the files when their contents change; each new handshake takes
//! the newest config while established connections keep theirs, so a rotation drops nothing. A
//! broken new file keeps the old config in use and is logged and counted (once per change).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::config::{ConfigIssue, TlsConfig};
use crate::telemetry::Metrics;

/// The identity of a client that presented a verified certificate (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate's subject, e.g. `CN=ops-bot,O=Example`.
    pub subject: String,
}

/// The current TLS config, swapped when the files change.
pub struct TlsState {
    current: RwLock<Arc<ServerConfig>>,
    files: TlsFiles,
    /// What the files held when `current` was loaded; a change is a difference from this.
    loaded_fingerprint: Vec<u8>,
}

#[derive(Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// What was loaded: the rustls config plus facts for metrics.
struct Loaded {
    config: Arc<ServerConfig>,
    not_after_unix: i64,
    fingerprint: Vec<u8>,
}

impl TlsState {
    /// Loads the files named by `[server.tls]`; problems are reported per config key.
    pub fn load(
        config: &TlsConfig,
        base_dir: &Path,
        metrics: &Metrics,
    ) -> Result<TlsState, Vec<ConfigIssue>> {
        let files = TlsFiles {
            cert: base_dir.join(&config.cert_file),
            key: base_dir.join(&config.key_file),
            client_ca: config.client_ca_file.as_ref().map(|p| base_dir.join(p)),
        };
        let loaded = load(&files)?;
        metrics.tls_certificate_expiry.set(loaded.not_after_unix);
        Ok(TlsState {
            current: RwLock::new(loaded.config),
            files,
            loaded_fingerprint: loaded.fingerprint,
        })
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the files every `interval` and swaps in a changed, valid config until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        metrics: Arc<Metrics>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut last = self.loaded_fingerprint.clone();
        // A broken file is reported once per change, not at every check.
        let mut last_failure: Option<Vec<u8>> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            match load(&self.files) {
                Ok(loaded) if loaded.fingerprint != last => {
                    last = loaded.fingerprint;
                    last_failure = None;
                    metrics.tls_certificate_expiry.set(loaded.not_after_unix);
                    metrics.tls_reloads.with_label_values(&["success"]).inc();
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded.config;
                    tracing::info!("TLS certificate reloaded");
                }
                Ok(_) => last_failure = None,
                Err(issues) => {
                    let seen = raw_contents(&self.files);
                    if last_failure.as_ref() == Some(&seen) {
                        continue;
                    }
                    last_failure = Some(seen);
                    metrics.tls_reloads.with_label_values(&["failure"]).inc();
                    let problems: Vec<String> = issues
                        .iter()
                        .map(|i| format!("{}: {}", i.key, i.message))
                        .collect();
                    tracing::error!(problems = ?problems, "TLS files changed but cannot be loaded; keeping the previous certificate");
                }
            }
        }
    }
}

/// The files' bytes as they are now (unreadable ones count as empty).
fn raw_contents(files: &TlsFiles) -> Vec<u8> {
    let mut out = Vec::new();
    for path in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        out.extend(std::fs::read(path).unwrap_or_default());
        out.push(0);
    }
    out
}

fn load(files: &TlsFiles) -> Result<Loaded, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut fingerprint = Vec::new();
    let certs: Vec<CertificateDer<'static>> = match read_certs(&files.cert) {
        Ok(c) => c,
        Err(e) => {
            issues.push(ConfigIssue::new("server.tls.cert_file", e));
            Vec::new()
        }
    };
    let key = match std::fs::read(&files.key) {
        Ok(bytes) => {
            fingerprint.extend_from_slice(&bytes);
            PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(|e| {
                    issues.push(ConfigIssue::new(
                        "server.tls.key_file",
                        format!("{}: no private key in PEM form: {e}", files.key.display()),
                    ))
                })
                .ok()
        }
        Err(e) => {
            issues.push(ConfigIssue::new(
                "server.tls.key_file",
                format!("cannot read {}: {e}", files.key.display()),
            ));
            None
        }
    };
    let client_roots = match &files.client_ca {
        None => None,
        Some(path) => match read_certs(path) {
            Ok(cas) => {
                let mut roots = RootCertStore::empty();
                for ca in cas {
                    fingerprint.extend_from_slice(&ca);
                    if let Err(e) = roots.add(ca) {
                        issues.push(ConfigIssue::new(
                            "server.tls.client_ca_file",
                            format!("{}: {e}", path.display()),
                        ));
                    }
                }
                Some(roots)
            }
            Err(e) => {
                issues.push(ConfigIssue::new("server.tls.client_ca_file", e));
                None
            }
        },
    };
    let Some(key) = key else { return Err(issues) };
    if !issues.is_empty() {
        return Err(issues);
    }
    for cert in &certs {
        fingerprint.extend_from_slice(cert);
    }
    let not_after_unix = certs
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .unwrap_or(0);

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![ConfigIssue::new("server.tls", e.to_string())])?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| vec![ConfigIssue::new("server.tls.client_ca_file", e.to_string())])?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        vec![ConfigIssue::new(
            "server.tls.key_file",
            format!("certificate and key do not form a usable pair: {e}"),
        )]
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        not_after_unix,
        fingerprint,
    })
}

/// Reads a PEM certificate chain (leaf first); an empty file is an error.
pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    read_certs(path)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: no private key in PEM form: {e}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The subject of the client's verified leaf certificate, if it sent one.
pub fn client_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<ClientIdentity> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(ClientIdentity {
        subject: cert.subject().to_string(),
    })
}
