//! Redis for the tests: the shared server on 127.0.0.1:6379 (each test under its own key
//! prefix, cleaned up at the end), and private `redis-server` processes on free loopback ports
//! for the fault tests, which stop, pause and restart them without touching the shared one.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// The Redis that `scripts/test` makes sure of.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "bmsgw-test:{test}:{}:",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A `[redis]` section; `extra` adds lines to it.
pub fn redis_section(url: &str, prefix: &str, extra: &str) -> String {
    format!("[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n{extra}\n")
}

pub async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("test Redis reachable")
}

/// Every key under `prefix`.
pub async fn keys(url: &str, prefix: &str) -> Vec<String> {
    let mut conn = connect(url).await;
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        found.extend(batch);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// Deletes every key under `prefix`.
pub async fn cleanup(url: &str, prefix: &str) {
    let found = keys(url, prefix).await;
    if !found.is_empty() {
        let mut conn = connect(url).await;
        let _: i64 = redis::cmd("DEL")
            .arg(&found)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// A `redis-server` process of the test's own, killed when dropped.
pub struct PrivateRedis {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// `redis://` URL a test client uses (differs from the gateway's for TLS servers).
    admin_url: String,
}

impl PrivateRedis {
    /// A plain server on a free port.
    pub async fn start() -> PrivateRedis {
        let port = super::closed_port();
        PrivateRedis::start_with(port, vec!["--port".into(), port.to_string()], None).await
    }

    /// A server started with `args` (which must make it listen on `port`). `admin_url`, when
    /// given, is how the test itself reaches it (e.g. with a password).
    pub async fn start_with(
        port: u16,
        args: Vec<String>,
        admin_url: Option<String>,
    ) -> PrivateRedis {
        let mut redis = PrivateRedis {
            port,
            args,
            child: None,
            admin_url: admin_url.unwrap_or_else(|| format!("redis://127.0.0.1:{port}")),
        };
        redis.spawn().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server installed (scripts/test installs it)");
        self.child = Some(child);
        self.wait_until_ready().await;
    }

    /// Waits (bounded) until the server answers PING.
    async fn wait_until_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "private redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.admin_url.as_str()) else {
            return false;
        };
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Some(_))
        )
    }

    /// Kills the server (the port is then closed) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Runs one command on the server from a connection of the test's own.
    pub async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.admin_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `contents` to a fresh file in a temporary directory and returns its path.
pub fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bmsgw-redis-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
