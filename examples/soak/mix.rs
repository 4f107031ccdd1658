//! The traffic mix: what request number `k` of the schedule is (its intent, path, token and
//! headers), and which answers count as expected for each intent.
//!
//! Per mille of the schedule: 20 bad tokens (401), 10 Windows servers (400 `BMS.0395`), 10
//! unknown servers (400 `BMS.0040`), 10 a project the policy does not grant (403), 5 a path
//! that is no API (404), 20 the few "hot" users held to a small tier (200 until their bucket
//! is empty, then 429), 50 `Cache-Control: no-cache` (200, always a miss), and the rest plain
//! requests (200, hit or miss). Normal users take turns (`k % users`), so each sends
//! `rate / users` per second at most and never meets its own limit.

use std::fmt;

/// The project the simulator holds and the policy grants.
pub const PROJECT: &str = "50a450a450a450a450a450a450a450a4";
/// A well-formed project no rule grants: 403 before any upstream call.
pub const FORBIDDEN_PROJECT: &str = "f0bf0bf0bf0bf0bf0bf0bf0bf0bf0bf0";
/// Users in the small `hot` tier, sent far above it.
pub const HOT_USERS: usize = 4;
/// The hot tier's bucket; its refill rate is a quarter of what each hot user sends.
pub const HOT_BURST: u32 = 5;
pub const WINDOWS_SERVERS: usize = 5;
pub const UNKNOWN_SERVERS: usize = 100;
/// The default tier's bucket, for everyone but the hot users.
pub const USER_BURST: u32 = 50;

/// What a request is meant to exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Intent {
    Normal,
    NoCache,
    BadToken,
    Windows,
    UnknownServer,
    Forbidden,
    NoRoute,
    HotUser,
}

/// Per mille of the schedule for every intent but `Normal`, which takes the rest.
const SHARES: [(Intent, u64); 7] = [
    (Intent::BadToken, 20),
    (Intent::Windows, 10),
    (Intent::UnknownServer, 10),
    (Intent::Forbidden, 10),
    (Intent::NoRoute, 5),
    (Intent::HotUser, 20),
    (Intent::NoCache, 50),
];

impl Intent {
    pub const ALL: [Intent; 8] = [
        Intent::Normal,
        Intent::NoCache,
        Intent::HotUser,
        Intent::BadToken,
        Intent::Windows,
        Intent::UnknownServer,
        Intent::Forbidden,
        Intent::NoRoute,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Intent::Normal => "normal",
            Intent::NoCache => "no-cache",
            Intent::BadToken => "bad token",
            Intent::Windows => "windows server",
            Intent::UnknownServer => "unknown server",
            Intent::Forbidden => "forbidden project",
            Intent::NoRoute => "no such API",
            Intent::HotUser => "hot user",
        }
    }

    /// Whether this answer is what the README documents for this request.
    pub fn accepts(self, outcome: &Outcome) -> bool {
        let Outcome::Answer {
            status,
            code,
            cache,
        } = outcome
        else {
            return false;
        };
        let cached = cache.is_some();
        match (self, *status, code.as_str()) {
            (Intent::Normal | Intent::HotUser, 200, OK) => cached,
            (Intent::NoCache, 200, OK) => *cache == Some(CacheHeader::Miss),
            (Intent::BadToken, 401, "APIGW.0301") => !cached,
            (Intent::Windows, 400, "BMS.0395") => cached,
            (Intent::UnknownServer, 400, "BMS.0040") => cached,
            (Intent::Forbidden, 403, "BMSGW.0201") => !cached,
            (Intent::NoRoute, 404, "APIGW.0101") => !cached,
            (Intent::HotUser, 429, "APIGW.0308") => !cached,
            _ => false,
        }
    }
}

/// The `code` of a `200` with a well-formed console URL.
pub const OK: &str = "ok";

/// The `X-Cache` header of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheHeader {
    Hit,
    Miss,
    /// Present but neither `hit` nor `miss`.
    Other,
}

/// What came back for one request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// An HTTP answer: its status, `error_code` (or [`OK`] for a 200 carrying an `https://`
    /// console URL, or a description of what was wrong with it) and `X-Cache`.
    Answer {
        status: u16,
        code: String,
        cache: Option<CacheHeader>,
    },
    /// The connection failed or closed before an answer.
    ConnectionError(String),
    /// No answer within the request timeout.
    Timeout,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answer {
                status,
                code,
                cache,
            } => {
                write!(f, "{status}")?;
                if code != OK {
                    write!(f, " {code}")?;
                }
                match cache {
                    Some(CacheHeader::Hit) => write!(f, " hit"),
                    Some(CacheHeader::Miss) => write!(f, " miss"),
                    Some(CacheHeader::Other) => write!(f, " X-Cache?"),
                    None => Ok(()),
                }
            }
            Outcome::ConnectionError(e) => write!(f, "connection error: {e}"),
            Outcome::Timeout => write!(f, "timeout"),
        }
    }
}

/// The tokens the mix sends.
pub struct Tokens {
    /// One per normal user, `soak-user-{i}`.
    pub users: Vec<String>,
    /// One per hot user, `soak-hot-{i}`.
    pub hot: Vec<String>,
    /// Tokens the gateway must refuse: foreign signatures, expired, garbage.
    pub bad: Vec<String>,
}

/// One request of the schedule.
pub struct Planned<'a> {
    pub intent: Intent,
    pub path: String,
    pub token: &'a str,
    pub no_cache: bool,
}

/// The schedule's contents, a pure function of the request number.
pub struct Mix {
    pub tokens: Tokens,
    pub servers: usize,
}

impl Mix {
    pub fn request(&self, k: u64) -> Planned<'_> {
        let h = splitmix64(k);
        let intent = intent_of(h % 1000);
        let pick = (h >> 20) as usize;
        let user = &self.tokens.users[(k % self.tokens.users.len() as u64) as usize];
        let (path, token) = match intent {
            Intent::Normal | Intent::NoCache => {
                (console_path(PROJECT, &linux(pick % self.servers)), user)
            }
            Intent::BadToken => (
                console_path(PROJECT, &linux(pick % self.servers)),
                &self.tokens.bad[pick % self.tokens.bad.len()],
            ),
            Intent::Windows => (
                console_path(PROJECT, &windows(pick % WINDOWS_SERVERS)),
                user,
            ),
            Intent::UnknownServer => (
                console_path(PROJECT, &unknown(pick % UNKNOWN_SERVERS)),
                user,
            ),
            Intent::Forbidden => (
                console_path(FORBIDDEN_PROJECT, &linux(pick % self.servers)),
                user,
            ),
            Intent::NoRoute => (format!("/v1/{PROJECT}/baremetalservers"), user),
            Intent::HotUser => (
                console_path(PROJECT, &linux(pick % self.servers)),
                &self.tokens.hot[pick % self.tokens.hot.len()],
            ),
        };
        Planned {
            intent,
            path,
            token,
            no_cache: intent == Intent::NoCache,
        }
    }
}

fn intent_of(per_mille: u64) -> Intent {
    let mut bound = 0;
    for (intent, share) in SHARES {
        bound += share;
        if per_mille < bound {
            return intent;
        }
    }
    Intent::Normal
}

/// The share of the schedule one intent gets.
pub fn share(intent: Intent) -> f64 {
    let others: u64 = SHARES.iter().map(|(_, s)| s).sum();
    let per_mille = SHARES
        .iter()
        .find(|(i, _)| *i == intent)
        .map_or(1000 - others, |(_, s)| *s);
    per_mille as f64 / 1000.0
}

fn console_path(project: &str, server: &str) -> String {
    format!("/v1/{project}/baremetalservers/{server}/remote_console")
}

/// Server ids: a UUID per kind and index, so the three kinds never collide.
pub fn linux(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}
pub fn windows(i: usize) -> String {
    format!("00000000-0000-4000-9000-{i:012x}")
}
fn unknown(i: usize) -> String {
    format!("00000000-0000-4000-a000-{i:012x}")
}

/// A well-mixed hash of the request number, so intents and servers interleave evenly.
fn splitmix64(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str, cache: Option<CacheHeader>) -> Outcome {
        Outcome::Answer {
            status,
            code: code.into(),
            cache,
        }
    }

    #[test]
    fn each_intent_accepts_only_its_documented_answers() {
        let hit = Some(CacheHeader::Hit);
        let miss = Some(CacheHeader::Miss);
        assert!(Intent::Normal.accepts(&answer(200, OK, hit)));
        assert!(Intent::Normal.accepts(&answer(200, OK, miss)));
        assert!(!Intent::Normal.accepts(&answer(200, OK, None)));
        assert!(!Intent::Normal.accepts(&answer(200, "no https:// url", hit)));
        assert!(!Intent::Normal.accepts(&answer(429, "APIGW.0308", None)));
        assert!(Intent::NoCache.accepts(&answer(200, OK, miss)));
        assert!(!Intent::NoCache.accepts(&answer(200, OK, hit)));
        assert!(Intent::HotUser.accepts(&answer(429, "APIGW.0308", None)));
        assert!(Intent::HotUser.accepts(&answer(200, OK, hit)));
        assert!(Intent::BadToken.accepts(&answer(401, "APIGW.0301", None)));
        assert!(!Intent::BadToken.accepts(&answer(200, OK, hit)));
        assert!(Intent::Windows.accepts(&answer(400, "BMS.0395", hit)));
        assert!(!Intent::Windows.accepts(&answer(400, "BMS.0040", hit)));
        assert!(Intent::UnknownServer.accepts(&answer(400, "BMS.0040", miss)));
        assert!(Intent::Forbidden.accepts(&answer(403, "BMSGW.0201", None)));
        assert!(Intent::NoRoute.accepts(&answer(404, "APIGW.0101", None)));
        assert!(!Intent::Normal.accepts(&Outcome::Timeout));
        assert!(!Intent::Normal.accepts(&Outcome::ConnectionError("reset".into())));
        assert!(!Intent::Normal.accepts(&answer(503, "BMSGW.0314", None)));
    }

    #[test]
    fn the_schedule_holds_every_intent_in_its_share() {
        let mix = Mix {
            tokens: Tokens {
                users: vec!["u".into()],
                hot: vec!["h".into()],
                bad: vec!["b".into()],
            },
            servers: 10,
        };
        let n = 100_000;
        let mut counts = std::collections::BTreeMap::new();
        for k in 0..n {
            *counts.entry(mix.request(k).intent).or_insert(0u64) += 1;
        }
        for (intent, count) in counts {
            let seen = count as f64 / n as f64;
            assert!(
                (seen - share(intent)).abs() < 0.005,
                "{intent:?}: {seen} of the schedule, meant {}",
                share(intent)
            );
        }
        assert_eq!(share(Intent::Normal), 0.875);
    }

    #[test]
    fn outcomes_print_as_status_code_and_cache() {
        assert_eq!(
            answer(200, OK, Some(CacheHeader::Hit)).to_string(),
            "200 hit"
        );
        assert_eq!(
            answer(400, "BMS.0395", Some(CacheHeader::Miss)).to_string(),
            "400 BMS.0395 miss"
        );
        assert_eq!(
            answer(429, "APIGW.0308", None).to_string(),
            "429 APIGW.0308"
        );
    }
}
