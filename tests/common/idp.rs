//! A local identity provider for tests: serves a JWKS (and an OIDC discovery document) over
//! real HTTPS on loopback, with a certificate from a fresh rcgen CA that the gateway trusts
//! through `ca_file`. The test controls it (rotate keys, go down, answer slowly, return
//! garbage) and reads every request it saw.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The path the JWKS is served on.
pub const JWKS_PATH: &str = "/keys";

/// How the provider answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Accepts connections and closes them at once.
    Down,
    /// 200 with a body that is not a JWKS.
    Garbage,
    /// Holds every answer until [`Idp::release`].
    Slow,
}

/// A signing key the test holds, with its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The JWK as published (`kid` set; `alg` set unless made with [`TestKey::without_alg`]).
    pub jwk: Value,
}

impl TestKey {
    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> TestKey {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("JWK from key");
        jwk.common.key_id = Some(kid.to_string());
        TestKey {
            kid: kid.into(),
            alg,
            encoding,
            jwk: serde_json::to_value(&jwk).unwrap(),
        }
    }

    /// A fresh P-256 key.
    pub fn es256(kid: &str) -> TestKey {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TestKey::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
    }

    /// A fresh P-384 key.
    pub fn es384(kid: &str) -> TestKey {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        TestKey::new(
            kid,
            Algorithm::ES384,
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
    }

    /// The repository's RSA test key, signing with `alg` (any RS* or PS*).
    pub fn rsa(kid: &str, alg: Algorithm) -> TestKey {
        let pem = std::fs::read(super::data_dir().join("keys/rs256-private.pem")).unwrap();
        TestKey::new(kid, alg, EncodingKey::from_rsa_pem(&pem).unwrap())
    }

    /// The repository's Ed25519 test key.
    pub fn ed25519(kid: &str) -> TestKey {
        let pem = std::fs::read(super::data_dir().join("keys/ed25519-private.pem")).unwrap();
        TestKey::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&pem).unwrap(),
        )
    }

    /// The same key published without an `alg`, so its key type decides what it verifies.
    pub fn without_alg(mut self) -> TestKey {
        self.jwk.as_object_mut().unwrap().remove("alg");
        self
    }

    /// The same key signing with another algorithm of its family.
    pub fn signing_with(&self, alg: Algorithm) -> TestKey {
        TestKey {
            alg,
            ..self.clone()
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// Signs with extra header fields (e.g. `jku`, `jwk`).
    pub fn sign_with_header(&self, extras: &[(&str, Value)], claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        for (k, v) in extras {
            match *k {
                "jku" => header.jku = v.as_str().map(str::to_string),
                "x5u" => header.x5u = v.as_str().map(str::to_string),
                "jwk" => header.jwk = Some(serde_json::from_value(v.clone()).unwrap()),
                "x5c" => {
                    header.x5c = Some(serde_json::from_value(v.clone()).unwrap());
                }
                other => {
                    header.extras.insert(other.to_string(), v.clone());
                }
            }
        }
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

struct State {
    mode: Mutex<Mode>,
    jwks: Mutex<String>,
    max_age: Mutex<Option<u64>>,
    /// Every request's path and query, in order.
    requests: Mutex<Vec<String>>,
    jwks_fetches: AtomicUsize,
    open_connections: AtomicUsize,
    changed: tokio::sync::Notify,
    release: tokio::sync::Notify,
    base_url: String,
}

/// The running provider.
pub struct Idp {
    pub addr: SocketAddr,
    /// `https://localhost:PORT`: the issuer, for discovery.
    pub base_url: String,
    /// The CA that signed its certificate (PEM file), for the gateway's `ca_file`.
    pub ca_file: PathBuf,
    state: Arc<State>,
}

impl Idp {
    /// Starts serving `keys`.
    pub async fn start(keys: &[&TestKey]) -> Idp {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ca_file = std::env::temp_dir().join(format!(
            "bmsgw-idp-ca-{}-{}.pem",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let base_url = format!("https://localhost:{}", addr.port());
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Normal),
            jwks: Mutex::new(jwks(keys)),
            max_age: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
            jwks_fetches: AtomicUsize::new(0),
            open_connections: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
            base_url: base_url.clone(),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = serving.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if *state.mode.lock().unwrap() == Mode::Down {
                        drop(stream);
                        state.requests.lock().unwrap().push("(refused)".into());
                        state.changed.notify_waiters();
                        return;
                    }
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    state.open_connections.fetch_add(1, Ordering::SeqCst);
                    let handler = state.clone();
                    let service = service_fn(move |request: Request<Incoming>| {
                        let state = handler.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                    state.open_connections.fetch_sub(1, Ordering::SeqCst);
                    state.changed.notify_waiters();
                });
            }
        });
        Idp {
            addr,
            base_url,
            ca_file,
            state,
        }
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.base_url)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Publishes a new key set.
    pub fn rotate(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    /// Sends `Cache-Control: max-age=N` with the JWKS from now on.
    pub fn set_max_age(&self, seconds: Option<u64>) {
        *self.state.max_age.lock().unwrap() = seconds;
    }

    /// Lets held (slow) answers go.
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }

    /// Successful and failed JWKS requests so far (not counting discovery).
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Every request's path and query, in order (`(refused)` for dropped connections).
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn open_connections(&self) -> usize {
        self.state.open_connections.load(Ordering::SeqCst)
    }

    /// Waits (at most 20 s) until `condition` holds, re-checking whenever the provider sees
    /// a request or a connection closes.
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&Idp) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let changed = self.state.changed.notified();
            if condition(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "timed out waiting for: {what}; requests: {:?}",
                    self.requests()
                );
            }
        }
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    state.requests.lock().unwrap().push(path.clone());
    let is_jwks = path == JWKS_PATH;
    let mode = *state.mode.lock().unwrap();
    if mode == Mode::Down {
        // Down for requests on connections opened earlier, too.
        if is_jwks {
            state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        }
        state.changed.notify_waiters();
        let mut response = Response::new(Full::new(Bytes::from_static(b"down")));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert("connection", "close".parse().unwrap());
        return response;
    }
    if mode == Mode::Slow {
        let released = state.release.notified();
        state.changed.notify_waiters();
        released.await;
    }
    let (status, body, max_age) = match path.as_str() {
        JWKS_PATH if mode == Mode::Garbage => {
            (StatusCode::OK, "<html>oops</html>".to_string(), None)
        }
        JWKS_PATH => (
            StatusCode::OK,
            state.jwks.lock().unwrap().clone(),
            *state.max_age.lock().unwrap(),
        ),
        "/.well-known/openid-configuration" => (
            StatusCode::OK,
            json!({"issuer": state.base_url, "jwks_uri": format!("{}{JWKS_PATH}", state.base_url)})
                .to_string(),
            None,
        ),
        _ => (StatusCode::NOT_FOUND, "{}".to_string(), None),
    };
    if is_jwks {
        state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(age) = max_age {
        response
            .headers_mut()
            .insert("cache-control", format!("max-age={age}").parse().unwrap());
    }
    state.changed.notify_waiters();
    response
}
