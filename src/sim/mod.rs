//! BMS simulator (temporary stub; replaced by the simulator work).
use crate::secret::Secret;
use std::net::SocketAddr;
use std::path::Path;
pub const DEFAULT_CONSOLE_BASE_URL: &str = "https://console.bms.sim.invalid/serial/";
pub struct SimCredential {
    pub access_key: String,
    pub secret_key: Secret,
    pub projects: Vec<String>,
    pub security_token: Option<Secret>,
}
pub struct Catalog;
impl Catalog {
    pub fn demo() -> Catalog {
        Catalog
    }
    pub fn from_json_file(_p: &Path) -> Result<Catalog, String> {
        Ok(Catalog)
    }
    pub fn project_ids(&self) -> Vec<String> {
        vec![]
    }
}
pub struct SimConfig {
    pub credentials: Vec<SimCredential>,
    pub catalog: Catalog,
    pub console_base_url: String,
}
#[derive(Clone)]
pub struct SimHandle;
impl SimHandle {
    pub fn endpoint(&self) -> String {
        String::new()
    }
    pub fn shutdown(&self) {}
    pub fn addr(&self) -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }
}
pub async fn start(_c: SimConfig, _l: tokio::net::TcpListener) -> std::io::Result<SimHandle> {
    Ok(SimHandle)
}
