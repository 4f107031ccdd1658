//! The upstream client over real TLS: a simulator behind a TLS front with a certificate from a
//! test CA. The gateway trusts it only through `upstream.ca_file`, and verifies the host name;
//! a front that demands client certificates gets the one `upstream.client_cert_file` names.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

struct TlsFront {
    addr: SocketAddr,
    ca_file: PathBuf,
}

/// Serves TLS for `names` with a fresh CA and forwards the plaintext to `backend`.
async fn tls_front(backend: SocketAddr, names: &[&str], tag: &str) -> TlsFront {
    tls_front_with_client_auth(backend, names, tag, None).await
}

/// Like [`tls_front`]; with `client_ca`, only clients with a certificate it signed get through.
async fn tls_front_with_client_auth(
    backend: SocketAddr,
    names: &[&str],
    tag: &str,
    client_ca: Option<&CertifiedIssuer<'static, KeyPair>>,
) -> TlsFront {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_file = std::env::temp_dir().join(format!("bmsgw-ca-{}-{tag}.pem", std::process::id()));
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsFront { addr, ca_file }
}

#[tokio::test]
async fn the_gateway_calls_an_https_endpoint_trusted_through_its_ca_file() {
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let front = tls_front(sim.addr(), &["localhost"], "ok").await;
    let h = Harness::start(TestConfig {
        endpoint: format!("https://localhost:{}", front.addr.port()),
        upstream_ca_file: Some(front.ca_file.clone()),
        ..TestConfig::default()
    })
    .await;
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Signed with the Host the SDK would use (name and port) and verified by the simulator.
    assert_eq!(sim.stats().remote_console_ok, 1);
    assert_eq!(sim.stats().auth_failures, 0);
}

#[tokio::test]
async fn an_untrusted_certificate_or_wrong_host_name_is_refused() {
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    // Trusted CA, but the certificate names another host.
    let front = tls_front(sim.addr(), &["bms.example.invalid"], "name").await;
    let h = Harness::start(TestConfig {
        endpoint: format!("https://localhost:{}", front.addr.port()),
        upstream_ca_file: Some(front.ca_file.clone()),
        ..TestConfig::default()
    })
    .await;
    h.console("alice", LINUX)
        .await
        .assert_error(502, "BMSGW.0301");

    // Right name, but the CA is not configured: only the public web PKI roots are trusted.
    let front = tls_front(sim.addr(), &["localhost"], "noca").await;
    let h = Harness::start(TestConfig {
        endpoint: format!("https://localhost:{}", front.addr.port()),
        ..TestConfig::default()
    })
    .await;
    h.console("alice", LINUX)
        .await
        .assert_error(502, "BMSGW.0301");
    assert_eq!(
        sim.stats().requests_total,
        0,
        "nothing reached the cloud over an unverified channel"
    );
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_an_endpoint_that_demands_one() {
    let sim = start_simulator(TEST_AK, TEST_SK).await;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let client_ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &client_ca).unwrap();
    let dir = std::env::temp_dir();
    let cert_file = dir.join(format!("bmsgw-upstream-client-{}.pem", std::process::id()));
    let key_file = dir.join(format!(
        "bmsgw-upstream-client-{}-key.pem",
        std::process::id()
    ));
    std::fs::write(&cert_file, client_cert.pem()).unwrap();
    std::fs::write(&key_file, client_key.serialize_pem()).unwrap();

    let front =
        tls_front_with_client_auth(sim.addr(), &["localhost"], "mtls", Some(&client_ca)).await;
    let endpoint = format!("https://localhost:{}", front.addr.port());
    // Without the certificate the front refuses the handshake.
    let h = Harness::start(TestConfig {
        endpoint: endpoint.clone(),
        upstream_ca_file: Some(front.ca_file.clone()),
        ..TestConfig::default()
    })
    .await;
    h.console("alice", LINUX)
        .await
        .assert_error(502, "BMSGW.0301");
    assert_eq!(sim.stats().requests_total, 0);

    let h = Harness::start(TestConfig {
        endpoint,
        upstream_ca_file: Some(front.ca_file.clone()),
        extra_upstream: format!(
            "client_cert_file = {:?}\nclient_key_file = {:?}",
            cert_file.display().to_string(),
            key_file.display().to_string()
        ),
        ..TestConfig::default()
    })
    .await;
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(sim.stats().remote_console_ok, 1);
}

#[tokio::test]
async fn a_client_certificate_without_its_key_is_a_config_error() {
    let config = TestConfig {
        extra_upstream: "client_cert_file = \"client.pem\"".into(),
        ..TestConfig::default()
    };
    let error = bms_console_gateway::config::Config::from_toml_str(
        &config.render(),
        &data_dir(),
        "test.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("test.toml: upstream: client_cert_file and client_key_file go together"),
        "{error}"
    );
}

#[tokio::test]
async fn iam_tokens_are_fetched_and_used_over_verified_tls() {
    use bms_console_gateway::secret::Secret;
    use bms_console_gateway::sim;
    let mut config = sim::SimConfig::new(Vec::new(), sim::Catalog::demo());
    config.users = vec![sim::SimIamUser {
        domain: "acme".into(),
        name: "svc".into(),
        password: Secret::new("tls-iam-password"),
        projects: vec![PROJECT.into()],
    }];
    let simulator = start_sim_with(config).await;
    let front = tls_front(simulator.addr(), &["localhost"], "iam").await;
    std::env::set_var("BMSGW_TLS_IAM_USER", "svc");
    std::env::set_var("BMSGW_TLS_IAM_DOMAIN", "acme");
    std::env::set_var("BMSGW_TLS_IAM_PASSWORD", "tls-iam-password");
    let https = format!("https://localhost:{}", front.addr.port());
    let accounts = format!(
        "[[accounts]]\nname = \"iam-tls\"\nendpoint = \"{https}\"\nprojects = [\"{PROJECT}\"]\n[accounts.iam]\nendpoint = \"{https}\"\nuser = \"env:BMSGW_TLS_IAM_USER\"\ndomain = \"env:BMSGW_TLS_IAM_DOMAIN\"\npassword = \"env:BMSGW_TLS_IAM_PASSWORD\"\nproject_id = \"{PROJECT}\"\n"
    );
    let h = Harness::start(TestConfig {
        accounts: Some(accounts),
        upstream_ca_file: Some(front.ca_file.clone()),
        ..TestConfig::default()
    })
    .await;
    assert_eq!(h.readyz().await, 200);
    let reply = h.console("alice", LINUX).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(simulator.stats().iam_tokens_issued, 1);
}
