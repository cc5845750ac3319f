//! Where a client secret comes from: the config file, an environment variable, or a file
//! (a mounted Kubernetes Secret). Resolved once at start-up; never printed.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// Secret bytes. No `Debug`/`Display`; zeroized on drop.
pub struct Secret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The secret's bytes, for hashing or comparison.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(Zeroizing::new(value.as_bytes().to_vec()))
    }
}

/// The configured source of a secret.
#[derive(Clone)]
pub enum SecretSource {
    /// Written in the config file (development and tests).
    Value(Zeroizing<String>),
    /// Read from this environment variable at start-up.
    Env(String),
    /// Read from this file at start-up; one trailing newline is removed.
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Value(_) => f.write_str("Value(<redacted>)"),
            SecretSource::Env(name) => f.debug_tuple("Env").field(name).finish(),
            SecretSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// `secret = { value = "..." }`, `{ env = "NAME" }` or `{ file = "path" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    value: Option<String>,
    env: Option<String>,
    file: Option<String>,
}

impl RawSecret {
    /// [`validate`](Self::validate) without taking the table.
    pub(super) fn validate_ref(&self, base: &Path) -> Result<SecretSource, String> {
        RawSecret {
            value: self.value.clone(),
            env: self.env.clone(),
            file: self.file.clone(),
        }
        .validate(base)
    }

    pub(super) fn validate(self, base: &Path) -> Result<SecretSource, String> {
        match (self.value, self.env, self.file) {
            (Some(v), None, None) if !v.is_empty() => Ok(SecretSource::Value(Zeroizing::new(v))),
            (None, Some(e), None) if !e.is_empty() => Ok(SecretSource::Env(e)),
            (None, None, Some(f)) if !f.is_empty() => Ok(SecretSource::File(base.join(f))),
            _ => Err("set exactly one of value, env, file (non-empty)".into()),
        }
    }
}

impl SecretSource {
    /// Reads the secret. The error says where it looked, never what it found.
    pub fn resolve(&self) -> Result<Secret, String> {
        let bytes = match self {
            SecretSource::Value(v) => v.as_bytes().to_vec(),
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set or not UTF-8"))?
                .into_bytes(),
            SecretSource::File(path) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                    if bytes.last() == Some(&b'\r') {
                        bytes.pop();
                    }
                }
                bytes
            }
        };
        let bytes = Zeroizing::new(bytes);
        if bytes.is_empty() {
            return Err("secret is empty".into());
        }
        Ok(Secret(bytes))
    }
}
