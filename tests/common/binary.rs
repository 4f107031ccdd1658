//! The real binary as a child process, for the tests that drive it as an operator would
//! (`cli.rs`, `shutdown.rs`, `secret_hygiene.rs`, `redis_deployments.rs`): spawned with its
//! stdout and stderr captured line by line, JSON log lines awaited by message, signals sent
//! with `kill`, and the process killed if a test drops it while it runs.
//!
//! A running binary has its own clock (the real one), so its tokens are minted at the real
//! time ([`token_now`]) and its config is a file ([`write_config_file`]).

use std::io::{BufRead, BufReader, Read};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::{
    claims, client, console_path, data_dir, mint, send, Reply, TestConfig, BODY, LINUX, PROJECT,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_bms-console-gateway");

/// How long to wait for one log line before a test fails.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running child of [`BIN`]; every line it prints on stdout or stderr arrives on a channel.
pub struct Binary {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Binary {
    /// `BIN args...` in the test's working directory.
    pub fn spawn(args: &[&str]) -> Binary {
        let mut command = Command::new(BIN);
        command.args(args);
        Binary::spawn_command(command)
    }

    /// `command` (built on [`BIN`], with any arguments, working directory and environment),
    /// with its output captured.
    pub fn spawn_command(mut command: Command) -> Binary {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let (tx, lines) = mpsc::channel();
        forward_lines(child.stdout.take().unwrap(), tx.clone());
        forward_lines(child.stderr.take().unwrap(), tx);
        Binary {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The process id, to read what the kernel says of it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line printed, if one comes within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = off_the_runtime(|| self.lines.recv_timeout(timeout).ok())?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Waits for a JSON log line whose `message` is `message`.
    pub fn wait_for(&mut self, message: &str) -> Value {
        loop {
            let Some(line) = self.next_line(LINE_TIMEOUT) else {
                panic!("no log line {message:?}; saw:\n{}", self.seen.join("\n"));
            };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["message"] == message {
                    return v;
                }
            }
        }
    }

    /// Sends the signal `name` (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Waits (up to 30 s) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        off_the_runtime(|| {
            for _ in 0..600 {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("the binary did not exit");
        })
    }

    /// Sends `SIGTERM`, waits for the exit, and returns it with every line printed.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let status = self.wait_exit();
        (status, self.rest_of_output())
    }

    /// Every line printed, once the process has exited and its pipes are closed.
    pub fn rest_of_output(&mut self) -> String {
        while self.next_line(Duration::from_secs(5)).is_some() {}
        self.seen.join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends each line read from `pipe` to `tx`, from a thread of its own.
fn forward_lines(pipe: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Runs a blocking wait without stalling a multi-threaded test runtime's other tasks (the
/// current-thread runtime has nothing else to run meanwhile, and refuses `block_in_place`).
fn off_the_runtime<T>(wait: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// `serve --config PATH`, once it has logged where it listens.
pub struct GatewayProcess {
    pub process: Binary,
    /// `http://host:port` of the public listener.
    pub public: String,
    /// `http://host:port` of the admin listener.
    pub admin: String,
}

impl GatewayProcess {
    pub fn serve(config: &Path) -> GatewayProcess {
        GatewayProcess::serve_command(serve_command(config))
    }

    /// Spawns `command` (see [`serve_command`]) and waits until it listens.
    pub fn serve_command(command: Command) -> GatewayProcess {
        let mut process = Binary::spawn_command(command);
        let listening = process.wait_for("bms-console-gateway listening");
        let url = |field: &str| format!("http://{}", listening[field].as_str().unwrap());
        GatewayProcess {
            public: url("public"),
            admin: url("admin"),
            process,
        }
    }
}

/// `BIN serve --config PATH`, to add an environment or log format to before serving.
pub fn serve_command(config: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.args(["serve", "--config", config.to_str().unwrap()]);
    command
}

/// [`serve_command`] pinned to core 0 with `taskset`, where the gateway runs its
/// current-thread runtime (as the benchmark runs it).
pub fn serve_command_on_one_core(config: &Path) -> Command {
    let mut command = Command::new("taskset");
    command.args([
        "-c",
        "0",
        BIN,
        "serve",
        "--config",
        config.to_str().unwrap(),
    ]);
    command
}

impl Deref for GatewayProcess {
    type Target = Binary;
    fn deref(&self) -> &Binary {
        &self.process
    }
}

impl DerefMut for GatewayProcess {
    fn deref_mut(&mut self) -> &mut Binary {
        &mut self.process
    }
}

/// Writes `config` to `<tmp>/bmsgw-binary-<pid>-<tag>/gateway.toml`, with the test data's
/// relative key and secret paths made absolute, atomically (a `SIGHUP` never reads half a
/// file). Writing the same tag again replaces the file.
pub fn write_config_file(tag: &str, config: &TestConfig) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bmsgw-binary-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    let data = data_dir().display().to_string();
    let text = config
        .render()
        .replace("file = \"keys/", &format!("file = \"{data}/keys/"))
        .replace("\"file:test-", &format!("\"file:{data}/test-"));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The console of the Linux test server, asked of the gateway at `public` (`http://host:port`)
/// by `sub` with a token valid now.
pub async fn console(public: &str, sub: &str) -> Reply {
    send(
        &client(),
        http::Method::POST,
        &format!("{public}{}", console_path(PROJECT, LINUX)),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {}", token_now(sub))),
        ],
        BODY.to_string(),
    )
    .await
}

/// A token for `sub` valid now on the real clock (a child process has no injected one).
pub fn token_now(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    mint(Algorithm::ES256, &claims(sub, now))
}
