//! The world a soak runs in: a scratch directory with the simulator's catalog and the
//! gateway's config and credentials; the simulator (`simulate`) and the gateway (`serve`)
//! started as the real binary on free loopback ports, each in its own process so the
//! gateway's RSS is its own; the tokens; and a graceful stop at the end.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bms_console_gateway::config::Config;
use bms_console_gateway::mint::MintOptions;
use serde_json::json;

use crate::args::Args;
use crate::client;
use crate::mix::{self, Tokens, HOT_BURST, HOT_USERS, PROJECT, USER_BURST, WINDOWS_SERVERS};
use crate::tokens::mint_many;

const KEY_ID: &str = "soak-es256";
const ISSUER: &str = "https://idp.soak.invalid";
const ACCESS_KEY: &str = "HPUASOAKAK000000001";
const SECRET_KEY: &str = "soak-secret-key-not-a-real-one";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn test_key(name: &str) -> PathBuf {
    repo().join("tests/data/keys").join(name)
}

/// The per-user limits the config sets, derived from the schedule so that normal users never
/// meet theirs and hot users send four times theirs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub user_per_second: f64,
    pub hot_per_second: f64,
}

impl Limits {
    pub fn for_args(args: &Args) -> Limits {
        let rate = f64::from(args.rate);
        let per_user = rate * (1.0 - mix::share(mix::Intent::HotUser)) / args.users as f64;
        let per_hot_user = rate * mix::share(mix::Intent::HotUser) / HOT_USERS as f64;
        Limits {
            user_per_second: (4.0 * per_user).max(10.0),
            hot_per_second: per_hot_user / 4.0,
        }
    }

    /// The most a GCRA with this tier may admit to the hot users over `elapsed`:
    /// `burst + rate × time` each.
    pub fn hot_admissions_at_most(&self, elapsed: Duration) -> u64 {
        let each = f64::from(HOT_BURST) + self.hot_per_second * elapsed.as_secs_f64();
        (HOT_USERS as f64 * each).floor() as u64
    }
}

/// A free loopback port, as the OS hands it out (released again for the process to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The simulator's world: `servers` Linux servers, a few Windows ones, one project.
fn catalog(servers: usize) -> serde_json::Value {
    let linux = (0..servers)
        .map(|i| json!({"id": mix::linux(i), "name": format!("linux-{i}"), "os": "linux"}));
    let windows = (0..WINDOWS_SERVERS)
        .map(|i| json!({"id": mix::windows(i), "name": format!("windows-{i}"), "os": "windows"}));
    json!({"projects": {PROJECT: linux.chain(windows).collect::<Vec<_>>()}})
}

fn gateway_config(
    public: u16,
    admin: u16,
    simulator: u16,
    limits: Limits,
    lifetime: u64,
) -> String {
    let hot_users: Vec<String> = (0..HOT_USERS).map(|i| format!("soak-hot-{i}")).collect();
    let public_key = test_key("es256-public.pem");
    format!(
        r#"# Written by the soak driver (examples/soak); see README "Benchmarks".
[server]
listen = "127.0.0.1:{public}"
admin_listen = "127.0.0.1:{admin}"

[auth]
[[auth.issuers]]
name = "soak"
issuer = "{ISSUER}"
audiences = ["bms-console-gateway"]
algorithms = ["ES256"]
pem_keys = [{{ kid = "{KEY_ID}", alg = "ES256", file = "{public_key}" }}]
max_token_lifetime_seconds = {max_lifetime}

[rate_limit]
requests_per_second = {user_rps}
burst = {USER_BURST}
[rate_limit.tiers.hot]
requests_per_second = {hot_rps}
burst = {HOT_BURST}

[cache]
ttl_seconds = 30

[upstream.quota]
# The simulator has no cloud quota to protect; the gateway's own cap would refuse cache fills.
requests_per_second = 100000
burst = 10000

[[accounts]]
name = "soak"
endpoint = "http://127.0.0.1:{simulator}"
region = "cn-north-4"
projects = ["{PROJECT}"]
access_key = "file:ak"
secret_key = "file:sk"

[[policy.rules]]
name = "soak-hot-users"
subjects = {hot_users:?}
projects = ["{PROJECT}"]
rate_limit_tier = "hot"

[[policy.rules]]
name = "soak-everyone"
subjects = ["*"]
projects = ["{PROJECT}"]

[logging]
level = "warn"

[audit]
sink = "file"
file = "audit.log"
max_file_bytes = 16777216
max_files = 1
token_hash_key = "file:audit-key"
"#,
        public_key = public_key.display(),
        max_lifetime = lifetime + 60,
        user_rps = limits.user_per_second,
        hot_rps = limits.hot_per_second,
    )
}

/// A child process of the soak, stopped with SIGTERM by [`Process::stop`] or killed when
/// dropped, so a failed soak leaves nothing running.
pub struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn spawn(name: &'static str, dir: &Path, args: &[&str]) -> Result<Process, String> {
        let log = fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(gateway_binary())
            .args(args)
            .current_dir(dir)
            // The simulator logs every call at info; the gateway's level is in its config.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", gateway_binary().display()))?;
        Ok(Process { name, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then the exit status within `patience` (else it is killed: an error).
    pub fn stop(mut self, patience: Duration) -> Result<ExitStatus, String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{} did not exit within {patience:?} of SIGTERM",
            self.name
        ))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The gateway binary of the same build profile as this driver (`target/<profile>/`).
fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("examples/ inside a target profile directory");
    profile_dir.join("bms-console-gateway")
}

/// Resident set size of a process, from `/proc/<pid>/status` (`VmRSS`), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Everything a soak runs against.
pub struct World {
    pub dir: PathBuf,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub simulator_addr: SocketAddr,
    pub gateway: Process,
    pub simulator: Process,
    pub limits: Limits,
}

impl World {
    /// Writes the scratch directory and starts the simulator, then the gateway, waiting for
    /// each to answer.
    pub async fn start(args: &Args, dir: PathBuf) -> Result<World, String> {
        let limits = Limits::for_args(args);
        let (public, admin, sim) = (free_port(), free_port(), free_port());
        let lifetime = args.duration.as_secs() + 600;
        let write = |name: &str, text: String| {
            fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("catalog.json", catalog(args.servers).to_string())?;
        write("ak", ACCESS_KEY.into())?;
        write("sk", SECRET_KEY.into())?;
        write(
            "audit-key",
            "soak-audit-token-hash-key-0123456789abcdef".into(),
        )?;
        write(
            "gateway.toml",
            gateway_config(public, admin, sim, limits, lifetime),
        )?;

        let mut simulator = Process::spawn(
            "simulator",
            &dir,
            &[
                "simulate",
                "--listen",
                &loopback(sim).to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
                "--catalog",
                "catalog.json",
            ],
        )?;
        wait_for(&mut simulator, loopback(sim), "/sim/stats").await?;
        let mut gateway = Process::spawn("gateway", &dir, &["serve", "--config", "gateway.toml"])?;
        wait_for(&mut gateway, loopback(admin), "/readyz").await?;
        Ok(World {
            dir,
            public: loopback(public),
            admin: loopback(admin),
            simulator_addr: loopback(sim),
            gateway,
            simulator,
            limits,
        })
    }

    /// Tokens for every user, the hot users and the refused kinds, minted in-process with the
    /// library's `mint` against the config the gateway runs.
    pub fn mint_tokens(&self, args: &Args) -> Result<Tokens, String> {
        let config = Config::load(&self.dir.join("gateway.toml")).map_err(|e| e.to_string())?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let lifetime = args.duration.as_secs() as i64 + 600;
        let options = |subject: String, key: &str, lifetime_seconds: i64| MintOptions {
            subject,
            issuer_name: None,
            key_file: Some(test_key(key)),
            kid: Some(KEY_ID.into()),
            lifetime_seconds,
            claims: vec![],
        };
        let users = mint_many(&config, args.users, now, |i| {
            options(format!("soak-user-{i}"), "es256-private.pem", lifetime)
        });
        let hot = mint_many(&config, HOT_USERS, now, |i| {
            options(format!("soak-hot-{i}"), "es256-private.pem", lifetime)
        });
        // Refused: signed by a key the gateway does not trust (under the trusted kid), expired
        // an hour ago, and not JWTs at all.
        let mut bad = mint_many(&config, args.users.min(1000), now, |i| {
            options(
                format!("soak-user-{i}"),
                "attacker-es256-private.pem",
                lifetime,
            )
        });
        bad.extend(mint_many(&config, 100, now - 7200, |i| {
            options(format!("soak-user-{i}"), "es256-private.pem", 3600)
        }));
        bad.extend(["not-a-jwt".to_string(), "a.b.c".to_string()]);
        Ok(Tokens { users, hot, bad })
    }
}

/// Polls `GET path` until it answers 200, failing early when the process exits.
async fn wait_for(process: &mut Process, addr: SocketAddr, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = process.exited() {
            return Err(format!("{} exited at start-up ({status})", process.name));
        }
        if let Ok((200, _)) = client::get(addr, path).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not answer {path} within 30 s",
                process.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn rss_is_read_from_the_vm_rss_line() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn normal_users_stay_under_their_limit_and_hot_users_go_four_times_over() {
        let args = Args::parse_from(["soak", "--rate", "1000", "--users", "5000"]);
        let limits = Limits::for_args(&args);
        // 0.196 per second each: the 10-per-second floor applies.
        assert_eq!(limits.user_per_second, 10.0);
        // 20 of every 1000 requests over 4 hot users: 5 each per second, a quarter admitted.
        assert_eq!(limits.hot_per_second, 1.25);
        assert_eq!(
            limits.hot_admissions_at_most(Duration::from_secs(60)),
            4 * (5 + 75)
        );
        let few = Args::parse_from(["soak", "--rate", "1000", "--users", "10"]);
        let limits = Limits::for_args(&few);
        assert!(limits.user_per_second >= 4.0 * 1000.0 * 0.98 / 10.0);
    }

    #[test]
    fn the_catalog_holds_the_linux_and_windows_servers() {
        let catalog = catalog(3);
        let servers = catalog["projects"][PROJECT].as_array().unwrap();
        assert_eq!(servers.len(), 3 + WINDOWS_SERVERS);
        assert_eq!(servers[0]["id"], mix::linux(0));
        assert_eq!(servers[3]["os"], "windows");
    }
}
