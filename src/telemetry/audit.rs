//! The audit trail: one JSON line for every console URL issued or refused.
//!
//! A record says who (subject, issuer, client address), what (project, server), the decision
//! and the rule or reason behind it, whether the URL came from the cache, the cloud's request
//! id and the status. It never holds the JWT or the console URL: the URL's token is recorded
//! as an HMAC-SHA256 under a key of the operator's (or a random per-process key), so a console
//! session seen elsewhere can be matched to the record of its issuance without the record
//! being usable as the credential.
//!
//! The request path writes the record's line (`audit_line`) straight into a bounded buffer of
//! pending lines, never waiting for the sink; a writer thread takes the whole buffer every few
//! milliseconds and writes it to stdout or to a size-rotated file in one write. A full buffer
//! or a failing sink drops the record, counts it in `bmsgw_audit_records_total` and logs it.
//! The writer stops, after writing what is pending, when the log is dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use aws_lc_rs::hmac;
#[cfg(test)]
use serde::Serialize;

use crate::config::{AuditConfig, AuditSink, ConfigIssue};
use crate::secret::SecretRef;
use crate::telemetry::Metrics;

/// Source of [`AuditLog`]'s `key_id`s: one per log built in this process.
static NEXT_KEY_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long dropping the log waits for the writer to drain the queue.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One audit record. Field order is the order in the JSON line, which `audit_line` writes;
/// serde's rendering of the same struct is the reference its test holds it to.
#[derive(Debug)]
#[cfg_attr(test, derive(Serialize))]
pub struct AuditRecord<'a> {
    /// Tells audit lines from access-log lines on a shared stdout.
    pub log: &'static str,
    /// RFC 3339, UTC.
    pub time: String,
    pub request_id: &'a str,
    pub subject: &'a str,
    pub issuer: &'a str,
    pub client_addr: Option<&'a str>,
    /// Only when the peer is one of `audit.trusted_proxies`.
    pub forwarded_for: Option<&'a str>,
    pub project: &'a str,
    pub server: &'a str,
    /// `issued`, `denied`, `rate_limited`, `upstream_refused` or `refused`.
    pub decision: &'static str,
    /// The policy rule that allowed (or explicitly denied) the request.
    pub rule: Option<&'a str>,
    /// For refusals: the error code answered.
    pub reason: Option<&'a str>,
    /// `hit`, `miss` or `coalesced`, when the request reached the cache.
    pub cache: Option<&'static str>,
    pub upstream_request_id: Option<&'a str>,
    pub status: u16,
    /// HMAC-SHA256 (hex) of the console URL's `token` parameter, for issued URLs.
    pub url_token_hmac: Option<&'a str>,
}

/// The audit log of one gateway.
pub struct AuditLog {
    pending: Option<Arc<PendingLines>>,
    /// Signals when the writer has drained the queue and stopped.
    writer_done: Option<Mutex<Receiver<()>>>,
    token_key: hmac::Key,
    /// Tells this log's `token_key` from any other's, for tags remembered with a URL.
    key_id: u64,
    trusted_proxies: Vec<AddressBlock>,
    metrics: Arc<Metrics>,
    /// When a lost record was last logged: under pressure, one line a second, not one each.
    last_loss_logged: Mutex<Option<std::time::Instant>>,
}

impl AuditLog {
    /// Opens the sink (a file sink is created or appended to now, so a bad path stops
    /// start-up) and starts the writer.
    pub fn from_config(
        config: &AuditConfig,
        base_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<AuditLog, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let token_key = match &config.token_hash_key {
            Some(reference) => {
                match SecretRef::parse(reference).and_then(|r| r.resolve(base_dir)) {
                    Ok(secret) => Some(hmac::Key::new(
                        hmac::HMAC_SHA256,
                        secret.expose().as_bytes(),
                    )),
                    Err(e) => {
                        issues.push(ConfigIssue::new("audit.token_hash_key", e));
                        None
                    }
                }
            }
            None => None,
        };
        let sink = match config.sink {
            AuditSink::Off => None,
            AuditSink::Stdout => Some(Sink::Stdout),
            AuditSink::File => {
                let path = base_dir.join(config.file.as_deref().unwrap_or(Path::new("audit.log")));
                match RotatingFile::open(path, config.max_file_bytes, config.max_files) {
                    Ok(file) => Some(Sink::File(file)),
                    Err(e) => {
                        issues.push(ConfigIssue::new("audit.file", e));
                        None
                    }
                }
            }
        };
        if !issues.is_empty() {
            return Err(issues);
        }
        let token_key = token_key.unwrap_or_else(|| {
            if config.sink != AuditSink::Off {
                tracing::info!(
                    "audit.token_hash_key is not set: console-URL token hashes use a random per-process key and do not match across restarts or replicas"
                );
            }
            random_key()
        });
        let (pending, writer_done) = match sink {
            None => (None, None),
            Some(sink) => {
                let pending = Arc::new(PendingLines::new(config.queue_capacity));
                let (done_tx, done_rx) = sync_channel(1);
                let metrics = metrics.clone();
                let for_writer = pending.clone();
                std::thread::Builder::new()
                    .name("bmsgw-audit".into())
                    .spawn(move || {
                        write_records(&for_writer, sink, &metrics);
                        let _ = done_tx.send(());
                    })
                    .map_err(|e| {
                        vec![ConfigIssue::new(
                            "audit",
                            format!("cannot start the writer: {e}"),
                        )]
                    })?;
                (Some(pending), Some(Mutex::new(done_rx)))
            }
        };
        Ok(AuditLog {
            pending,
            writer_done,
            token_key,
            key_id: NEXT_KEY_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            trusted_proxies: config
                .trusted_proxies
                .iter()
                .filter_map(|p| AddressBlock::parse(p).ok())
                .collect(),
            metrics,
            last_loss_logged: Mutex::new(None),
        })
    }

    /// True unless `audit.sink = "off"`.
    pub fn enabled(&self) -> bool {
        self.pending.is_some()
    }

    /// Whether a peer's `X-Forwarded-For` is worth recording.
    pub fn trusts_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|block| block.contains(peer))
    }

    /// The keyed hash of a console URL's token (the `token` query parameter, or the whole URL
    /// when it has none), hex-encoded.
    pub fn url_token_hash(&self, url: &str) -> String {
        crate::hex::lower(&self.url_token_tag(url))
    }

    /// [`AuditLog::url_token_hash`] of a fetched URL, computed once per URL and key: a cached
    /// URL is handed out (and audited) many times. Read it with [`crate::hex::digits_str`].
    pub fn fetched_url_token_hash(&self, fetched: &crate::cache::Fetched) -> [u8; 64] {
        fetched.audit_tag(self.key_id, |url| {
            crate::hex::lower_32(&self.url_token_tag(url))
        })
    }

    fn url_token_tag(&self, url: &str) -> [u8; 32] {
        let token = url
            .split_once('?')
            .and_then(|(_, query)| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("token="))
            })
            .unwrap_or(url);
        let mut tag = [0u8; 32];
        tag.copy_from_slice(hmac::sign(&self.token_key, token.as_bytes()).as_ref());
        tag
    }

    /// Adds a record to the pending lines without waiting; when they are full it is dropped
    /// (counted and logged).
    pub fn record(&self, record: &AuditRecord<'_>) {
        let Some(pending) = &self.pending else {
            return;
        };
        if pending.push(|line| crate::telemetry::audit_line::write(record, line)) {
            return;
        }
        let lost = self.metrics.audit_records.with_label_values(&["dropped"]);
        lost.inc();
        let mut last = lock(&self.last_loss_logged);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(std::time::Instant::now());
            tracing::error!(
                request_id = record.request_id,
                lost_so_far = lost.get(),
                "audit queue full: audit record dropped"
            );
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Closing the pending lines lets the writer write the rest and stop. Wait (boundedly:
        // a sink can hang) so records made at shutdown are not lost.
        if let Some(pending) = self.pending.take() {
            pending.close();
        }
        if let Some(done) = self.writer_done.take() {
            let done = done.into_inner().unwrap_or_else(|e| e.into_inner());
            let _ = done.recv_timeout(WRITER_DRAIN_TIMEOUT);
        }
    }
}

/// Finished lines waiting for the writer: one growing buffer, handed over whole.
struct PendingLines {
    lines: Mutex<Lines>,
    /// Wakes the writer when the first line arrives in an empty buffer, or at close.
    arrived: Condvar,
    /// Most records held (`audit.queue_capacity`).
    capacity: usize,
}

#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    records: usize,
    closed: bool,
}

impl PendingLines {
    fn new(capacity: usize) -> PendingLines {
        PendingLines {
            lines: Mutex::new(Lines::default()),
            arrived: Condvar::new(),
            capacity,
        }
    }

    /// Appends one line made by `write` (which must not write a newline); false, and nothing
    /// written, when the buffer already holds `capacity` records or is closed.
    fn push(&self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut lines = lock(&self.lines);
        if lines.records >= self.capacity || lines.closed {
            return false;
        }
        write(&mut lines.bytes);
        lines.bytes.push(b'\n');
        lines.records += 1;
        let first = lines.records == 1;
        drop(lines);
        // Only the first line of a batch wakes the writer: a busy core is not interrupted once
        // per record.
        if first {
            self.arrived.notify_one();
        }
        true
    }

    fn close(&self) {
        lock(&self.lines).closed = true;
        self.arrived.notify_one();
    }

    /// Waits for at least one line (or the close), lets more gather unless closing, and swaps
    /// the pending lines into `batch` (which must be empty). Returns how many records it took:
    /// zero once closed and empty.
    fn take(&self, batch: &mut Vec<u8>) -> usize {
        let mut lines = lock(&self.lines);
        while lines.records == 0 && !lines.closed {
            lines = self.arrived.wait(lines).unwrap_or_else(|e| e.into_inner());
        }
        if !lines.closed {
            drop(lines);
            std::thread::sleep(WRITER_GATHER);
            lines = lock(&self.lines);
        }
        std::mem::swap(&mut lines.bytes, batch);
        std::mem::take(&mut lines.records)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// An address or a CIDR block (`10.0.0.0/8`, `fd00::/8`) of trusted proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressBlock {
    network: IpAddr,
    prefix: u8,
}

impl AddressBlock {
    pub fn parse(text: &str) -> Result<AddressBlock, String> {
        let bad = || format!("{text:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8)");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(AddressBlock { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            // An IPv4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (net, addr, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) as u128, u32::from(a) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        if shift >= 128 {
            return true;
        }
        (net >> shift) == (addr >> shift)
    }
}

/// The process's random HMAC key, made once: a config reload builds a new audit log, and its
/// hashes must still match the ones written before it.
fn random_key() -> hmac::Key {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let bytes = KEY.get_or_init(|| {
        let mut bytes = [0u8; 32];
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            // The system RNG failing leaves nothing else working either; fall back to the
            // UUID generator's randomness rather than panicking during start-up.
            bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        bytes
    });
    hmac::Key::new(hmac::HMAC_SHA256, bytes)
}

enum Sink {
    Stdout,
    File(RotatingFile),
}

impl Sink {
    /// Writes whole lines, in as few writes as the sink allows.
    fn write_lines(&mut self, lines: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(lines)?;
                out.flush()
            }
            Sink::File(file) => file.write_lines(lines),
        }
    }
}

/// How long the writer lets records gather after the first of a batch. Waking it for every
/// record would cost the request path a context switch per request on a busy core, and each
/// wake-up is a write and a switch; an audit line may wait a few milliseconds instead.
const WRITER_GATHER: Duration = Duration::from_millis(5);

/// A pending buffer grown past this is not kept for the next batch (a burst is not held on
/// to for the life of the process).
const KEPT_BATCH_BYTES: usize = 1 << 20;

fn write_records(pending: &PendingLines, mut sink: Sink, metrics: &Metrics) {
    let mut batch = Vec::new();
    loop {
        let count = pending.take(&mut batch) as u64;
        if count == 0 {
            return;
        }
        match sink.write_lines(&batch) {
            Ok(()) => metrics
                .audit_records
                .with_label_values(&["written"])
                .inc_by(count),
            Err(e) => {
                metrics
                    .audit_records
                    .with_label_values(&["failed"])
                    .inc_by(count);
                tracing::error!(error = %e, records = count, "audit sink failed: audit records dropped");
            }
        }
        batch.clear();
        batch.shrink_to(KEPT_BATCH_BYTES);
    }
}

/// An append-only file rotated by size: `audit.log` → `audit.log.1` → … → `audit.log.N`.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    max_files: u32,
}

impl RotatingFile {
    fn open(path: PathBuf, max_bytes: u64, max_files: u32) -> Result<RotatingFile, String> {
        let file = open_append(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile {
            path,
            file,
            size,
            max_bytes,
            max_files,
        })
    }

    /// Appends whole lines, rotating first whenever the next line would take the file past
    /// `max_bytes` (a file always holds at least one line).
    fn write_lines(&mut self, mut lines: &[u8]) -> std::io::Result<()> {
        while !lines.is_empty() {
            let room =
                usize::try_from(self.max_bytes.saturating_sub(self.size)).unwrap_or(usize::MAX);
            let fitting = if lines.len() <= room {
                lines.len()
            } else {
                match lines[..room].iter().rposition(|&b| b == b'\n') {
                    Some(end) => end + 1,
                    // An empty file takes its first line, however long.
                    None if self.size == 0 => lines
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(lines.len(), |end| end + 1),
                    None => 0,
                }
            };
            self.append(&lines[..fitting])?;
            lines = &lines[fitting..];
            if !lines.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if !bytes.is_empty() {
            self.file.write_all(bytes)?;
            self.size += bytes.len() as u64;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.max_files == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.max_files));
            for n in (1..self.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = open_append(&self.path).map_err(std::io::Error::other)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, String> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    // Audit records name people and servers: readable by the owner and its group only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options
        .open(path)
        .map_err(|e| format!("cannot open audit file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(key: Option<&str>) -> AuditLog {
        let config = AuditConfig {
            sink: AuditSink::Off,
            token_hash_key: key.map(str::to_string),
            ..AuditConfig::default()
        };
        AuditLog::from_config(&config, Path::new("."), Arc::new(Metrics::new(&[]))).unwrap()
    }

    #[test]
    fn the_url_token_is_hashed_with_one_key_per_process_unless_configured() {
        let url = "https://console.example.com/serial/?token=040134bb-1111";
        // Two logs (as after a config reload) agree without a configured key...
        assert_eq!(log(None).url_token_hash(url), log(None).url_token_hash(url));
        // ...only the token parameter counts...
        assert_eq!(
            log(None).url_token_hash(url),
            log(None).url_token_hash("https://elsewhere/?x=1&token=040134bb-1111")
        );
        // ...and a configured key gives other hashes than the random one.
        std::env::set_var("BMSGW_AUDIT_UNIT_TEST_KEY", "k");
        let keyed = log(Some("env:BMSGW_AUDIT_UNIT_TEST_KEY")).url_token_hash(url);
        assert_ne!(keyed, log(None).url_token_hash(url));
        assert_eq!(keyed.len(), 64);
    }

    #[test]
    fn a_fetched_urls_remembered_hash_is_used_only_under_the_key_that_made_it() {
        let url = "https://console.example.com/serial/?token=040134bb-2222";
        let fetched = crate::cache::Fetched::new(crate::bms::ConsoleUrl::new(url.into()), None);
        let random = log(None);
        std::env::set_var("BMSGW_AUDIT_UNIT_TEST_KEY_2", "another key");
        let keyed = log(Some("env:BMSGW_AUDIT_UNIT_TEST_KEY_2"));
        for _ in 0..2 {
            assert_eq!(
                crate::hex::digits_str(&random.fetched_url_token_hash(&fetched)),
                random.url_token_hash(url)
            );
            assert_eq!(
                crate::hex::digits_str(&keyed.fetched_url_token_hash(&fetched)),
                keyed.url_token_hash(url)
            );
        }
        assert_ne!(keyed.url_token_hash(url), random.url_token_hash(url));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidr_blocks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let block = AddressBlock::parse("10.1.0.0/16").unwrap();
        assert!(block.contains(ip("10.1.200.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.0.9")));
        assert!(AddressBlock::parse("127.0.0.1")
            .unwrap()
            .contains(ip("127.0.0.1")));
        assert!(!AddressBlock::parse("127.0.0.1")
            .unwrap()
            .contains(ip("127.0.0.2")));
        assert!(AddressBlock::parse("0.0.0.0/0")
            .unwrap()
            .contains(ip("192.0.2.1")));
        assert!(AddressBlock::parse("fd00::/8")
            .unwrap()
            .contains(ip("fd12::1")));
        assert!(AddressBlock::parse("10.0.0.0/33").is_err());
        assert!(AddressBlock::parse("lb.internal").is_err());
    }
}
