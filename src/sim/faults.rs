//! Fault knobs: the misbehaviour a test can switch on in a running simulator.
//!
//! [`Faults`] is shared between the test (through `SimHandle::faults`, or `POST /sim/faults`)
//! and the server task, so every knob is an atomic and takes effect on the next request
//! without a restart. Rates are probabilities in `0.0..=1.0`, rolled independently per
//! request; `1.0` always fires, `0.0` never does, so tests can be deterministic.
//!
//! The server applies them, on the API route only and before anything else, in this order:
//! the next scripted fault (if any), latency, close connection, throttle (429), 5xx (see
//! `server.rs` for the answers).
//!
//! A **script** is a queue of faults for the next calls, one per call, e.g. `"next":
//! ["503","503","503"]` fails exactly the next three calls with 503 and lets the fourth
//! through; `"ok"` lets one call through unharmed. That makes retry tests exact where rates
//! would be probabilistic. Besides whole error answers, a script can break the answer itself:
//! a connection dropped after the head, a truncated, huge or trickling body, or a `200` that
//! is not a console answer (see `broken.rs`); `trickle_interval_ms` sets the trickle's pace.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bound for injected latency, so a typo in a test cannot park a request for hours.
pub const MAX_LATENCY: Duration = Duration::from_secs(600);
/// The pause between two bytes of a `trickle` answer unless set otherwise: about 13 s for
/// a whole console answer, past any sane upstream deadline.
pub const DEFAULT_TRICKLE_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound for the trickle pace (one byte a minute is slow enough for any deadline).
pub const MAX_TRICKLE_INTERVAL: Duration = Duration::from_secs(60);

/// Live fault knobs. All setters take `&self`; values are read per request.
#[derive(Debug)]
pub struct Faults {
    latency_ms: AtomicU64,
    trickle_interval_ms: AtomicU64,
    // f64 rates stored as their bit patterns (there is no AtomicF64).
    error_5xx_rate: AtomicU64,
    throttle_rate: AtomicU64,
    close_connection_rate: AtomicU64,
    script: Mutex<VecDeque<Scripted>>,
}

/// One scripted fault: what the next call gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scripted {
    /// No fault for this call.
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "502")]
    BadGateway,
    /// `503 APIGW.0202`, as the rate knob answers.
    #[serde(rename = "503")]
    Unavailable,
    #[serde(rename = "504")]
    GatewayTimeout,
    /// The connection is closed without an answer.
    #[serde(rename = "reset")]
    Reset,
    /// `400 BMS.0212` "System is overloaded" (BMS sends 400 here, not 429).
    #[serde(rename = "overload")]
    Overload,
    /// `429 APIGW.0308`.
    #[serde(rename = "throttle")]
    Throttle,
    /// A `200` head, then the connection is dropped before any body byte.
    #[serde(rename = "reset_after_headers")]
    ResetAfterHeaders,
    /// `Content-Length` of a whole console answer, half of it sent, then the connection closes.
    #[serde(rename = "truncated")]
    Truncated,
    /// A well-formed console answer padded past any sane size cap (`broken::HUGE_BODY_BYTES`).
    #[serde(rename = "huge_body")]
    HugeBody,
    /// A well-formed console answer sent one byte per `trickle_interval_ms`.
    #[serde(rename = "trickle")]
    Trickle,
    /// A `200` with an HTML page.
    #[serde(rename = "not_json")]
    NotJson,
    /// A `200` console answer without `url`.
    #[serde(rename = "no_url")]
    NoUrl,
    /// A `200` console answer whose URL is `http://`, not `https://`.
    #[serde(rename = "http_url")]
    HttpUrl,
}

/// The knobs as JSON, for `POST /sim/faults` and `GET /sim/faults`. In a POST, an omitted
/// field leaves that knob as it is; in an answer every field is present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_5xx_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_connection_rate: Option<f64>,
    /// The pause between two bytes of a `trickle` answer (1 to 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trickle_interval_ms: Option<u64>,
    /// Faults for the next calls, appended to the queue (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Vec<Scripted>>,
    /// Lifetime of IAM tokens issued from now on (applied by the server, not by [`Faults`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_token_lifetime_seconds: Option<u64>,
    /// While true, `POST /v3/auth/tokens` answers 503 (applied by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_down: Option<bool>,
    /// Calls per minute per account before `429 APIGW.0308`; 0 = unlimited (applied by the
    /// server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_limit_per_minute: Option<u64>,
}

/// Clamps to `0.0..=1.0`; NaN becomes 0 (a knob that is off is the safe reading of garbage).
fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

fn load_rate(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Ordering::Relaxed))
}

fn store_rate(cell: &AtomicU64, rate: f64) {
    cell.store(clamp_rate(rate).to_bits(), Ordering::Relaxed);
}

/// One roll of the dice for a knob.
pub(crate) fn fires(rate: f64) -> bool {
    rate > 0.0 && (rate >= 1.0 || rand::random::<f64>() < rate)
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            latency_ms: AtomicU64::new(0),
            trickle_interval_ms: AtomicU64::new(DEFAULT_TRICKLE_INTERVAL.as_millis() as u64),
            error_5xx_rate: AtomicU64::default(),
            throttle_rate: AtomicU64::default(),
            close_connection_rate: AtomicU64::default(),
            script: Mutex::default(),
        }
    }
}

impl Faults {
    /// All knobs off.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Delay before every API answer (capped at [`MAX_LATENCY`]); zero turns it off.
    pub fn set_latency(&self, latency: Duration) {
        let ms = latency.min(MAX_LATENCY).as_millis();
        self.latency_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The pause between two bytes of a `trickle` answer (clamped to 1 ms..[`MAX_TRICKLE_INTERVAL`]).
    pub fn set_trickle_interval(&self, interval: Duration) {
        let ms = interval
            .clamp(Duration::from_millis(1), MAX_TRICKLE_INTERVAL)
            .as_millis();
        self.trickle_interval_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Share of API requests answered `503` (clamped to `0.0..=1.0`).
    pub fn set_error_5xx_rate(&self, rate: f64) {
        store_rate(&self.error_5xx_rate, rate);
    }

    /// Share of API requests answered `429 APIGW.0308` (clamped to `0.0..=1.0`).
    pub fn set_throttle_rate(&self, rate: f64) {
        store_rate(&self.throttle_rate, rate);
    }

    /// Share of API requests whose connection is dropped without an answer (clamped).
    pub fn set_close_connection_rate(&self, rate: f64) {
        store_rate(&self.close_connection_rate, rate);
    }

    /// Queues faults for the next calls, one per call.
    pub fn script(&self, faults: &[Scripted]) {
        self.lock_script().extend(faults.iter().copied());
    }

    /// Takes the fault for this call, if one is queued.
    pub(crate) fn next_scripted(&self) -> Option<Scripted> {
        self.lock_script().pop_front()
    }

    fn lock_script(&self) -> std::sync::MutexGuard<'_, VecDeque<Scripted>> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    pub fn trickle_interval(&self) -> Duration {
        Duration::from_millis(self.trickle_interval_ms.load(Ordering::Relaxed))
    }

    pub fn error_5xx_rate(&self) -> f64 {
        load_rate(&self.error_5xx_rate)
    }

    pub fn throttle_rate(&self) -> f64 {
        load_rate(&self.throttle_rate)
    }

    pub fn close_connection_rate(&self) -> f64 {
        load_rate(&self.close_connection_rate)
    }

    /// Current knobs, every field present.
    pub fn settings(&self) -> FaultSettings {
        FaultSettings {
            latency_ms: Some(self.latency_ms.load(Ordering::Relaxed)),
            error_5xx_rate: Some(self.error_5xx_rate()),
            throttle_rate: Some(self.throttle_rate()),
            close_connection_rate: Some(self.close_connection_rate()),
            trickle_interval_ms: Some(self.trickle_interval_ms.load(Ordering::Relaxed)),
            next: Some(self.lock_script().iter().copied().collect()),
            ..FaultSettings::default()
        }
    }

    /// Applies the fields that are present. Unlike the setters (which clamp), this refuses
    /// out-of-range input, since it comes over HTTP and a silent clamp would hide a mistake;
    /// on error nothing is changed.
    pub fn apply(&self, settings: &FaultSettings) -> Result<(), String> {
        if let Some(ms) = settings.latency_ms {
            if u128::from(ms) > MAX_LATENCY.as_millis() {
                return Err(format!(
                    "latency_ms must be at most {}",
                    MAX_LATENCY.as_millis()
                ));
            }
        }
        if let Some(ms) = settings.trickle_interval_ms {
            if ms == 0 || u128::from(ms) > MAX_TRICKLE_INTERVAL.as_millis() {
                return Err(format!(
                    "trickle_interval_ms must be between 1 and {}",
                    MAX_TRICKLE_INTERVAL.as_millis()
                ));
            }
        }
        for (name, rate) in [
            ("error_5xx_rate", settings.error_5xx_rate),
            ("throttle_rate", settings.throttle_rate),
            ("close_connection_rate", settings.close_connection_rate),
        ] {
            if let Some(r) = rate {
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("{name} must be between 0.0 and 1.0"));
                }
            }
        }
        if let Some(ms) = settings.latency_ms {
            self.set_latency(Duration::from_millis(ms));
        }
        if let Some(ms) = settings.trickle_interval_ms {
            self.set_trickle_interval(Duration::from_millis(ms));
        }
        if let Some(r) = settings.error_5xx_rate {
            self.set_error_5xx_rate(r);
        }
        if let Some(r) = settings.throttle_rate {
            self.set_throttle_rate(r);
        }
        if let Some(r) = settings.close_connection_rate {
            self.set_close_connection_rate(r);
        }
        if let Some(next) = &settings.next {
            self.script(next);
        }
        Ok(())
    }

    /// Every knob off.
    pub fn reset(&self) {
        self.set_latency(Duration::ZERO);
        self.set_trickle_interval(DEFAULT_TRICKLE_INTERVAL);
        self.set_error_5xx_rate(0.0);
        self.set_throttle_rate(0.0);
        self.set_close_connection_rate(0.0);
        self.lock_script().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_clamp_and_settings_report() {
        let f = Faults::new();
        assert_eq!(f.settings().throttle_rate, Some(0.0));
        f.set_throttle_rate(2.0);
        f.set_error_5xx_rate(f64::NAN);
        f.set_close_connection_rate(-1.0);
        f.set_latency(Duration::from_secs(100_000));
        assert_eq!(f.throttle_rate(), 1.0);
        assert_eq!(f.error_5xx_rate(), 0.0);
        assert_eq!(f.close_connection_rate(), 0.0);
        assert_eq!(f.latency(), MAX_LATENCY);
        f.reset();
        assert_eq!(f.settings(), Faults::new().settings());
    }

    #[test]
    fn apply_changes_only_given_fields_and_refuses_out_of_range() {
        let f = Faults::new();
        f.set_throttle_rate(0.5);
        let s: FaultSettings = serde_json::from_str(r#"{"latency_ms":20}"#).unwrap();
        f.apply(&s).unwrap();
        assert_eq!(f.latency(), Duration::from_millis(20));
        assert_eq!(f.throttle_rate(), 0.5);
        let bad = FaultSettings {
            error_5xx_rate: Some(0.1),
            throttle_rate: Some(1.5),
            ..FaultSettings::default()
        };
        assert!(f.apply(&bad).unwrap_err().contains("throttle_rate"));
        assert_eq!(f.error_5xx_rate(), 0.0, "nothing applied on error");
        assert!(serde_json::from_str::<FaultSettings>(r#"{"latncy_ms":1}"#).is_err());
        for bad in [0, 60_001] {
            let trickle = FaultSettings {
                trickle_interval_ms: Some(bad),
                ..FaultSettings::default()
            };
            assert!(f
                .apply(&trickle)
                .unwrap_err()
                .contains("trickle_interval_ms"));
        }
        assert_eq!(f.trickle_interval(), DEFAULT_TRICKLE_INTERVAL);
    }

    #[test]
    fn every_scripted_fault_has_its_documented_json_name() {
        let names = r#"["ok","502","503","504","reset","overload","throttle","reset_after_headers","truncated","huge_body","trickle","not_json","no_url","http_url"]"#;
        let parsed: Vec<Scripted> = serde_json::from_str(names).unwrap();
        assert_eq!(parsed.len(), 14);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), names);
        let f = Faults::new();
        f.script(&parsed);
        assert_eq!(f.settings().next, Some(parsed));
        f.set_trickle_interval(Duration::ZERO);
        assert_eq!(f.trickle_interval(), Duration::from_millis(1), "clamped");
        f.reset();
        assert_eq!(f.settings(), Faults::new().settings());
    }

    #[test]
    fn extreme_rates_are_deterministic() {
        assert!((0..1000).all(|_| fires(1.0)));
        assert!((0..1000).all(|_| !fires(0.0)));
    }
}
