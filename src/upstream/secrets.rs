//! Secrets that follow their files: a [`WatchedSecret`] holds the value a `file:` reference
//! pointed at when last read, and [`WatchedSecret::poll`] re-reads the file.
//!
//! Kubernetes rotates a mounted secret by swapping the files under the mount, so the gateway
//! must pick a new value up without a restart. The rules:
//! - a file that now holds a different, non-empty value replaces the old one;
//! - a file that cannot be read or is empty (a half-finished rotation, a broken mount) keeps
//!   the **old** value in use; the failure is logged once per broken state (the log names the
//!   reference, never the value) and counted in `bmsgw_secret_reloads_total{result="failure"}`;
//! - `env:` references never change while the process runs.
//!
//! The whole file is compared rather than its mtime: secret files are tiny, and mtimes on
//! some file systems have a one-second granularity that would miss a quick second rotation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use crate::secret::{Secret, SecretRef};

/// What one poll found.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    Unchanged,
    Reloaded,
    /// The file is broken; the old value stays. `first` is true on the first poll that saw
    /// this breakage (so it is logged and counted once).
    Failed {
        first: bool,
        reason: String,
    },
}

/// A secret and where it comes from.
pub struct WatchedSecret {
    reference: SecretRef,
    base_dir: PathBuf,
    current: RwLock<Secret>,
    broken: AtomicBool,
}

impl std::fmt::Debug for WatchedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedSecret")
            .field("reference", &self.reference.describe())
            .finish_non_exhaustive()
    }
}

impl WatchedSecret {
    /// Parses and resolves `text` (`env:NAME` or `file:PATH`); the error never holds the value.
    pub fn resolve(text: &str, base_dir: &Path) -> Result<WatchedSecret, String> {
        let reference = SecretRef::parse(text)?;
        let value = reference.resolve(base_dir)?;
        Ok(WatchedSecret {
            reference,
            base_dir: base_dir.to_path_buf(),
            current: RwLock::new(value),
            broken: AtomicBool::new(false),
        })
    }

    /// The value in use.
    pub fn get(&self) -> Secret {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A description safe to log: the reference, never the value.
    pub fn describe(&self) -> String {
        self.reference.describe()
    }

    /// Re-reads a `file:` secret (see the module docs for the rules).
    pub fn poll(&self) -> Poll {
        if matches!(self.reference, SecretRef::Env(_)) {
            return Poll::Unchanged;
        }
        match self.reference.resolve(&self.base_dir) {
            Ok(value) => {
                self.broken.store(false, Ordering::Relaxed);
                let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                if *current == value {
                    Poll::Unchanged
                } else {
                    *current = value;
                    Poll::Reloaded
                }
            }
            Err(reason) => Poll::Failed {
                first: !self.broken.swap(true, Ordering::Relaxed),
                reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_replaces_the_value_and_a_broken_one_keeps_it() {
        let dir = std::env::temp_dir().join(format!("bmsgw-watched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sk"), "one\n").unwrap();
        let s = WatchedSecret::resolve("file:sk", &dir).unwrap();
        assert_eq!(s.get().expose(), "one");
        assert_eq!(s.poll(), Poll::Unchanged);
        std::fs::write(dir.join("sk"), "two").unwrap();
        assert_eq!(s.poll(), Poll::Reloaded);
        assert_eq!(s.get().expose(), "two");
        std::fs::write(dir.join("sk"), "").unwrap();
        assert!(matches!(s.poll(), Poll::Failed { first: true, .. }));
        assert!(matches!(s.poll(), Poll::Failed { first: false, .. }));
        assert_eq!(s.get().expose(), "two", "the old value stays in use");
        std::fs::write(dir.join("sk"), "three").unwrap();
        assert_eq!(s.poll(), Poll::Reloaded);
        assert!(!format!("{s:?}").contains("three"));
    }
}
