//! TLS termination on the public listener, with certificates made by rcgen and a rustls
//! client: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, mutual TLS (identity in the access log
//! and in policy), refused client certificates (other CA, expired, none), and certificate
//! rotation on disk without dropping an open connection.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;

const BOT_SUBJECT: &str = "CN=ops-bot, O=Example";

/// A CA that signs server and client certificates, with files in a directory of the test's own.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM and as what a rustls client wants.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("bmsgw-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test CA {tag}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki { dir, ca };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn server_leaf(&self, common_name: &str) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    fn client_leaf(&self, common_name: &str, expired: bool) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    /// Writes the server's files (each replaced in one rename, as a secret mount does).
    fn install_server(&self, leaf: &Leaf) {
        for (name, text) in [
            ("server.pem", &leaf.cert_pem),
            ("server-key.pem", &leaf.key_pem),
        ] {
            let tmp = self.path(&format!("{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path(name)).unwrap();
        }
    }

    /// `[server.tls]` for these files; `client_ca` turns mutual TLS on.
    fn server_tls(&self, client_ca: Option<&Pki>) -> String {
        let mut text = format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nreload_interval_seconds = 1\n",
            self.path("server.pem").display().to_string(),
            self.path("server-key.pem").display().to_string(),
        );
        if let Some(ca) = client_ca {
            text.push_str(&format!(
                "client_ca_file = {:?}\n",
                ca.path("ca.pem").display().to_string()
            ));
        }
        text
    }
}

/// A rustls client that trusts `server_ca`, speaks one TLS version and offers `alpn`.
fn client_config(
    server_ca: &Pki,
    version: &'static rustls::SupportedProtocolVersion,
    alpn: &[&[u8]],
    client_cert: Option<&Leaf>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                PrivateKeyDer::Pkcs8(leaf.key.clone_key()),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(h: &Harness, config: rustls::ClientConfig) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(h.gateway.public_addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// An HTTP connection over TLS, in whichever protocol ALPN chose.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn over(stream: TlsStream) -> hyper::Result<Sender> {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }

    /// POSTs the console request with `token`; returns the status, version and body.
    async fn console(&mut self, token: &str) -> hyper::Result<(u16, http::Version, String)> {
        let request =
            http::Request::post(format!("https://localhost{}", console_path(PROJECT, LINUX)))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(Full::new(Bytes::from(BODY)));
        let mut request = request.unwrap();
        let response = match self {
            Sender::H1(s) => {
                request
                    .headers_mut()
                    .insert("host", http::HeaderValue::from_static("localhost"));
                s.send_request(request).await?
            }
            Sender::H2(s) => s.send_request(request).await?,
        };
        let status = response.status().as_u16();
        let version = response.version();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, version, String::from_utf8_lossy(&body).into_owned()))
    }
}

async fn start(pki: &Pki, client_ca: Option<&Pki>, policy: Option<String>) -> Harness {
    let mut config = TestConfig {
        extra_server: pki.server_tls(client_ca),
        ..TestConfig::default()
    };
    if let Some(policy) = policy {
        config.policy = policy;
    }
    Harness::start(config).await
}

#[tokio::test]
async fn tls_1_2_and_1_3_with_alpn_h2_and_http_1_1_serve_the_api() {
    let pki = Pki::new("versions");
    let leaf = pki.server_leaf("gateway");
    pki.install_server(&leaf);
    let h = start(&pki, None, None).await;
    let token = h.token("alice");
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        for (alpn, expected) in [
            (&b"h2"[..], http::Version::HTTP_2),
            (&b"http/1.1"[..], http::Version::HTTP_11),
        ] {
            let stream = connect(&h, client_config(&pki, version, &[alpn], None))
                .await
                .unwrap();
            let (_, session) = stream.get_ref();
            assert_eq!(session.protocol_version(), Some(version.version));
            assert_eq!(session.alpn_protocol(), Some(alpn));
            let (status, http_version, body) = Sender::over(stream)
                .await
                .unwrap()
                .console(&token)
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(http_version, expected);
        }
    }
    // The expiry of the served certificate is exported for the "expires soon" alert.
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
    assert_eq!(
        metric(
            &h.metrics().await,
            "bmsgw_tls_certificate_expiry_timestamp_seconds"
        ),
        parsed.validity().not_after.timestamp() as f64
    );
    // Plain HTTP on the TLS port gets nowhere.
    let plain = h
        .client
        .request(
            http::Request::get(format!("{}/", h.gateway.public_url()))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(plain.is_err());
}

#[tokio::test]
async fn the_verified_client_identity_is_logged_and_can_be_required_by_policy() {
    let logs = LogCapture::start();
    let server_pki = Pki::new("mtls-server");
    server_pki.install_server(&server_pki.server_leaf("gateway"));
    let client_pki = Pki::new("mtls-clients");
    let policy = format!(
        r#"
[[policy.rules]]
name = "ops-bot-only"
subjects = ["*"]
client_certs = ["{BOT_SUBJECT}"]
projects = ["{PROJECT}"]
"#
    );
    let h = start(&server_pki, Some(&client_pki), Some(policy)).await;
    let token = h.token("alice");

    let bot = client_pki.client_leaf("ops-bot", false);
    let config = client_config(&server_pki, &rustls::version::TLS13, &[b"h2"], Some(&bot));
    let mut sender = Sender::over(connect(&h, config).await.unwrap())
        .await
        .unwrap();
    let (status, _, body) = sender.console(&token).await.unwrap();
    assert_eq!(status, 200, "{body}");

    // Same CA, another identity: the TLS handshake passes, the policy refuses.
    let other = client_pki.client_leaf("someone-else", false);
    let config = client_config(
        &server_pki,
        &rustls::version::TLS12,
        &[b"http/1.1"],
        Some(&other),
    );
    let mut sender = Sender::over(connect(&h, config).await.unwrap())
        .await
        .unwrap();
    let (status, _, body) = sender.console(&token).await.unwrap();
    assert_eq!(status, 403, "{body}");

    let access = logs.access();
    assert_eq!(access.len(), 2, "{access:?}");
    assert_eq!(access[0]["tls_client"], BOT_SUBJECT);
    assert_eq!(access[0]["rule"], "ops-bot-only");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(access[1]["tls_client"], "CN=someone-else, O=Example");
    assert_eq!(access[1]["status"], 403);
}

#[tokio::test]
async fn client_certificates_from_another_ca_expired_or_missing_are_refused() {
    let server_pki = Pki::new("refuse-server");
    server_pki.install_server(&server_pki.server_leaf("gateway"));
    let client_pki = Pki::new("refuse-clients");
    let stranger_pki = Pki::new("refuse-stranger");
    let h = start(&server_pki, Some(&client_pki), None).await;
    let token = h.token("alice");

    let wrong_ca = stranger_pki.client_leaf("ops-bot", false);
    let expired = client_pki.client_leaf("ops-bot", true);
    let cases: [(&str, Option<&Leaf>); 3] = [
        ("another CA", Some(&wrong_ca)),
        ("expired", Some(&expired)),
        ("none", None),
    ];
    for (i, (case, cert)) in cases.into_iter().enumerate() {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let config = client_config(&server_pki, version, &[b"http/1.1"], cert);
            // With TLS 1.3 the client finishes its side before the server has judged the
            // certificate, so the refusal may surface on the first request instead.
            let outcome = match connect(&h, config).await {
                Err(_) => None,
                Ok(stream) => match Sender::over(stream).await {
                    Err(_) => None,
                    Ok(mut sender) => sender.console(&token).await.ok(),
                },
            };
            assert!(
                outcome.is_none(),
                "{case} over {version:?}: served {outcome:?}"
            );
        }
        let failures = 2.0 * (i + 1) as f64;
        wait_for_metric(
            &h.gateway.admin_url(),
            "bmsgw_tls_handshake_failures_total",
            failures,
        )
        .await;
    }
    assert_eq!(h.sim().stats().requests_total, 0);

    // The right certificate still works.
    let good = client_pki.client_leaf("ops-bot", false);
    let config = client_config(&server_pki, &rustls::version::TLS13, &[b"h2"], Some(&good));
    let (status, _, body) = Sender::over(connect(&h, config).await.unwrap())
        .await
        .unwrap()
        .console(&token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_and_open_ones_keep_working() {
    let pki = Pki::new("rotate");
    let first = pki.server_leaf("gateway-1");
    pki.install_server(&first);
    let h = start(&pki, None, None).await;
    let token = h.token("alice");
    let admin = h.gateway.admin_url();
    let config = || client_config(&pki, &rustls::version::TLS13, &[b"http/1.1"], None);

    let stream = connect(&h, config()).await.unwrap();
    assert_eq!(peer_leaf(&stream), first.der);
    let mut open = Sender::over(stream).await.unwrap();
    assert_eq!(open.console(&token).await.unwrap().0, 200);

    let second = pki.server_leaf("gateway-2");
    pki.install_server(&second);
    wait_for_metric(&admin, r#"bmsgw_tls_reloads_total{result="success"}"#, 1.0).await;

    let stream = connect(&h, config()).await.unwrap();
    assert_eq!(
        peer_leaf(&stream),
        second.der,
        "new connections get the new certificate"
    );
    // The connection opened before the rotation was not dropped.
    assert_eq!(open.console(&token).await.unwrap().0, 200);

    // A broken file is refused and counted; the current certificate stays in use.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    wait_for_metric(&admin, r#"bmsgw_tls_reloads_total{result="failure"}"#, 1.0).await;
    let stream = connect(&h, config()).await.unwrap();
    assert_eq!(peer_leaf(&stream), second.der);
    assert_eq!(
        Sender::over(stream)
            .await
            .unwrap()
            .console(&token)
            .await
            .unwrap()
            .0,
        200
    );
}

fn peer_leaf(stream: &TlsStream) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn start_up_reports_unusable_tls_files_by_config_key() {
    let pki = Pki::new("badfiles");
    let leaf = pki.server_leaf("gateway");
    pki.install_server(&leaf);
    // A key that does not belong to the certificate.
    let other = pki.server_leaf("other");
    std::fs::write(pki.path("server-key.pem"), &other.key_pem).unwrap();
    let config = TestConfig {
        extra_server: pki.server_tls(None),
        ..TestConfig::default()
    }
    .build();
    let error = match bms_console_gateway::server::start(config).await {
        Ok(_) => panic!("started with a mismatched key"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("server.tls.key_file"), "{error}");

    // check-config reports the same, without opening a socket.
    let dir = pki.path("");
    let data = data_dir().display().to_string();
    let text = TestConfig {
        extra_server: pki.server_tls(None),
        ..TestConfig::default()
    }
    .render()
    .replace("file = \"keys/", &format!("file = \"{data}/keys/"))
    .replace("\"file:test-", &format!("\"file:{data}/test-"));
    let config_file = dir.join("gateway.toml");
    std::fs::write(&config_file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bms-console-gateway"))
        .args(["check-config", "--config", config_file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "gateway.toml: server.tls.key_file: certificate and key do not form a usable pair"
        ),
        "{stderr}"
    );
}
