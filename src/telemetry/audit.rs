//! The audit trail: one JSON line for every console URL issued or refused.
//!
//! A record says who (subject, issuer, client address), what (project, server), the decision
//! and the rule or reason behind it, whether the URL came from the cache, the cloud's request
//! id and the status. It never holds the JWT or the console URL: the URL's token is recorded
//! as an HMAC-SHA256 under a key of the operator's (or a random per-process key), so a console
//! session seen elsewhere can be matched to the record of its issuance without the record
//! being usable as the credential.
//!
//! The request path only formats the record and offers it to a bounded queue (never waiting);
//! a writer thread drains the queue to stdout or to a size-rotated file. A full queue or a
//! failing sink drops the record, counts it in `bmsgw_audit_records_total` and logs it. The
//! writer stops, after draining what is queued, when the log is dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use serde::Serialize;

use crate::config::{AuditConfig, AuditSink, ConfigIssue};
use crate::secret::SecretRef;
use crate::telemetry::Metrics;

/// Source of [`AuditLog`]'s `key_id`s: one per log built in this process.
static NEXT_KEY_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes reserved for one record's line; a typical record is 450–500.
const RECORD_CAPACITY: usize = 768;

/// How long dropping the log waits for the writer to drain the queue.
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One audit record. Field order is the order in the JSON line.
#[derive(Debug, Serialize)]
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
    pub url_token_hmac: Option<String>,
}

/// The audit log of one gateway.
pub struct AuditLog {
    queue: Option<SyncSender<String>>,
    /// Signals when the writer has drained the queue and stopped.
    writer_done: Option<std::sync::Mutex<Receiver<()>>>,
    token_key: hmac::Key,
    /// Tells this log's `token_key` from any other's, for tags remembered with a URL.
    key_id: u64,
    trusted_proxies: Vec<AddressBlock>,
    metrics: Arc<Metrics>,
    /// When a lost record was last logged: under pressure, one line a second, not one each.
    last_loss_logged: std::sync::Mutex<Option<std::time::Instant>>,
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
        let (queue, writer_done) = match sink {
            None => (None, None),
            Some(sink) => {
                let (tx, rx) = sync_channel(config.queue_capacity);
                let (done_tx, done_rx) = sync_channel(1);
                let metrics = metrics.clone();
                std::thread::Builder::new()
                    .name("bmsgw-audit".into())
                    .spawn(move || {
                        write_records(rx, sink, &metrics);
                        let _ = done_tx.send(());
                    })
                    .map_err(|e| {
                        vec![ConfigIssue::new(
                            "audit",
                            format!("cannot start the writer: {e}"),
                        )]
                    })?;
                (Some(tx), Some(std::sync::Mutex::new(done_rx)))
            }
        };
        Ok(AuditLog {
            queue,
            writer_done,
            token_key,
            key_id: NEXT_KEY_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            trusted_proxies: config
                .trusted_proxies
                .iter()
                .filter_map(|p| AddressBlock::parse(p).ok())
                .collect(),
            metrics,
            last_loss_logged: std::sync::Mutex::new(None),
        })
    }

    /// True unless `audit.sink = "off"`.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
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
    /// URL is handed out (and audited) many times.
    pub fn fetched_url_token_hash(&self, fetched: &crate::cache::Fetched) -> String {
        crate::hex::lower(&fetched.audit_tag(self.key_id, |url| self.url_token_tag(url)))
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

    /// Queues a record without waiting; a full queue drops it (counted and logged).
    pub fn record(&self, record: &AuditRecord<'_>) {
        let Some(queue) = &self.queue else {
            return;
        };
        // Sized for a whole record up front: growing the buffer field by field copied it
        // three times over.
        let mut line = Vec::with_capacity(RECORD_CAPACITY);
        if serde_json::to_writer(&mut line, record).is_err() {
            return;
        }
        let Ok(line) = String::from_utf8(line) else {
            return;
        };
        let (result, why) = match queue.try_send(line) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => ("dropped", "audit queue full"),
            Err(TrySendError::Disconnected(_)) => ("failed", "audit writer stopped"),
        };
        let lost = self.metrics.audit_records.with_label_values(&[result]);
        lost.inc();
        let mut last = self
            .last_loss_logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(std::time::Instant::now());
            tracing::error!(
                request_id = record.request_id,
                lost_so_far = lost.get(),
                "{why}: audit record dropped"
            );
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain it and stop. Wait (boundedly: a sink can
        // hang) so records queued at shutdown are not lost.
        self.queue = None;
        if let Some(done) = self.writer_done.take() {
            let done = done.into_inner().unwrap_or_else(|e| e.into_inner());
            let _ = done.recv_timeout(WRITER_DRAIN_TIMEOUT);
        }
    }
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
    /// Writes a batch of records, in as few writes as the sink allows.
    fn write_lines(&mut self, lines: &[String]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
                for line in lines {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                }
                let mut out = std::io::stdout().lock();
                out.write_all(&buf)?;
                out.flush()
            }
            Sink::File(file) => file.write_lines(lines),
        }
    }
}

/// Most records the writer takes from the queue for one write.
const WRITER_BATCH: usize = 512;
/// How long the writer lets records gather after each write. Waking it for every record would
/// cost the request path a context switch per request on a busy core; an audit line may wait a
/// millisecond instead.
const WRITER_GATHER: Duration = Duration::from_millis(1);

fn write_records(queue: Receiver<String>, mut sink: Sink, metrics: &Metrics) {
    let mut batch = Vec::with_capacity(WRITER_BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while batch.len() < WRITER_BATCH {
            match queue.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
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
        std::thread::sleep(WRITER_GATHER);
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

    /// Appends the lines, rotating first whenever the next line would take the file past
    /// `max_bytes` (a file always holds at least one line).
    fn write_lines(&mut self, lines: &[String]) -> std::io::Result<()> {
        let mut pending: Vec<u8> = Vec::new();
        for line in lines {
            let len = line.len() as u64 + 1;
            let size = self.size + pending.len() as u64;
            if size > 0 && size + len > self.max_bytes {
                self.append(&mut pending)?;
                self.rotate()?;
            }
            pending.extend_from_slice(line.as_bytes());
            pending.push(b'\n');
        }
        self.append(&mut pending)
    }

    fn append(&mut self, pending: &mut Vec<u8>) -> std::io::Result<()> {
        if !pending.is_empty() {
            self.file.write_all(pending)?;
            self.size += pending.len() as u64;
            pending.clear();
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
                random.fetched_url_token_hash(&fetched),
                random.url_token_hash(url)
            );
            assert_eq!(
                keyed.fetched_url_token_hash(&fetched),
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
