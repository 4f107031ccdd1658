//! Console URLs: minting them, and remembering the tokens of the most recent ones.
//!
//! Every URL is `<console_base_url>?token=<fresh uuid>` (`&token=` when the base already has a
//! query), whether it goes out in a real answer or in a broken one (`http_url`, `huge_body`).
//! The token is what makes a console URL a credential, so the last [`REMEMBERED_TOKENS`] are
//! kept for tests that check a token never shows up where it should not (logs, metrics, error
//! bodies); the bound keeps a long-running simulator's memory flat.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// How many of the most recent URL tokens are remembered.
pub const REMEMBERED_TOKENS: usize = 1024;

/// Mints console URLs under one base URL.
pub(crate) struct ConsoleUrls {
    base: String,
    recent_tokens: Mutex<VecDeque<String>>,
}

impl ConsoleUrls {
    pub(crate) fn new(base: &str) -> ConsoleUrls {
        ConsoleUrls {
            base: base.to_string(),
            recent_tokens: Mutex::new(VecDeque::with_capacity(REMEMBERED_TOKENS)),
        }
    }

    /// A new URL with a fresh token, under the configured base.
    pub(crate) fn mint(&self) -> String {
        self.mint_under(&self.base)
    }

    /// A new URL with a fresh token under another base (a broken answer's `http://` one).
    pub(crate) fn mint_under(&self, base: &str) -> String {
        let token = uuid::Uuid::new_v4().to_string();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}token={token}");
        let mut recent = self.lock();
        if recent.len() == REMEMBERED_TOKENS {
            recent.pop_front();
        }
        recent.push_back(token);
        url
    }

    /// The most recent tokens, oldest first.
    pub(crate) fn recent_tokens(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        // A panic elsewhere while holding the lock leaves a queue that is still valid.
        self.recent_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_a_fresh_remembered_token_and_the_memory_is_bounded() {
        let urls = ConsoleUrls::new("https://c.invalid/serial/");
        let first = urls.mint();
        let token = first
            .strip_prefix("https://c.invalid/serial/?token=")
            .unwrap();
        uuid::Uuid::parse_str(token).unwrap();
        assert_ne!(urls.mint(), first);
        assert_eq!(urls.recent_tokens()[0], token);
        let with_query = ConsoleUrls::new("https://c.invalid/?a=1");
        assert!(with_query
            .mint()
            .starts_with("https://c.invalid/?a=1&token="));
        assert!(urls
            .mint_under("http://c.invalid/")
            .starts_with("http://c.invalid/?token="));
        for _ in 0..REMEMBERED_TOKENS {
            urls.mint();
        }
        let recent = urls.recent_tokens();
        assert_eq!(recent.len(), REMEMBERED_TOKENS);
        assert!(
            !recent.contains(&token.to_string()),
            "the oldest was dropped"
        );
    }
}
