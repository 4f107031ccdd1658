//! Secrets and secret references.
//!
//! Every credential the gateway holds (service AK/SK, IAM passwords and tokens) lives in a
//! [`Secret`], whose `Debug` and `Display` print `[redacted]`. Leaking one therefore takes an
//! explicit call to [`Secret::expose`], which is easy to find in review; a stray `{:?}` on a
//! config or request struct prints nothing sensitive.
//!
//! Config files never hold secrets inline: they hold a [`SecretRef`] (`env:NAME` or
//! `file:PATH`) that is resolved at start-up.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A secret value. Cloning is cheap; the bytes are never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only where the value is put on the wire or into a MAC.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret comes from: `env:NAME` or `file:PATH` (relative paths are taken from the
/// directory of the config file that names them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`. Anything else is refused, so an inline secret in a
    /// config file is an error rather than a silently accepted habit.
    pub fn parse(text: &str) -> Result<SecretRef, String> {
        if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() {
                return Err("`env:` needs a variable name, e.g. env:BMS_SECRET_KEY".into());
            }
            return Ok(SecretRef::Env(name.to_string()));
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path, e.g. file:/run/secrets/bms_sk".into());
            }
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        Err("must be a secret reference `env:NAME` or `file:PATH`, never the secret itself".into())
    }

    /// Resolves the reference. Files are trimmed of trailing line breaks, which editors and
    /// Kubernetes secret mounts tend to add. The error never contains the secret.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, String> {
        let value = match self {
            SecretRef::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?,
            SecretRef::File(path) => {
                let path = base_dir.join(path);
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            }
        };
        if value.is_empty() {
            return Err(format!("{} resolves to an empty value", self.describe()));
        }
        Ok(Secret::new(value))
    }

    /// A description safe to print: the reference, never the value.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("env:{name}"),
            SecretRef::File(path) => format!("file:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_print_the_value() {
        let s = Secret::new("super-secret-value");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "super-secret-value");
    }

    #[test]
    fn references_parse_and_inline_values_are_refused() {
        assert_eq!(
            SecretRef::parse("env:X").unwrap(),
            SecretRef::Env("X".into())
        );
        assert_eq!(
            SecretRef::parse("file:/a/b").unwrap(),
            SecretRef::File(PathBuf::from("/a/b"))
        );
        assert!(SecretRef::parse("AKIAEXAMPLE").is_err());
        assert!(SecretRef::parse("env:").is_err());
    }

    #[test]
    fn file_references_are_relative_to_the_base_dir_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("bmsgw-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sk"), "value\n").unwrap();
        let s = SecretRef::parse("file:sk").unwrap().resolve(&dir).unwrap();
        assert_eq!(s.expose(), "value");
        let err = SecretRef::parse("file:missing")
            .unwrap()
            .resolve(&dir)
            .unwrap_err();
        assert!(err.contains("missing"));
    }
}
