//! Where a client method's verification keys come from, and the one signature check
//! over them: inline in the configuration (parsed once), a file re-read when its contents
//! change (a `private_key_jwt` JWKS file, a SPIFFE bundle as a SPIRE agent writes it), or
//! a URL fetched and cached by [`crate::upstream::jwks`] with the same limits, freshness
//! and unknown-`kid` rules as an upstream issuer's keys.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::{ClientAuthError, Task};
use crate::jose::jws::{CompactJws, SignatureError};
use crate::jose::{JwsAlgorithm, KeySet};
use crate::reload::fingerprint;
use crate::upstream::jwks::{CachedVerifyError, JwksCache, KeyFormat};

/// How often a key file is compared with what was last read, in seconds.
pub(crate) const KEY_FILE_WATCH_SECONDS: u64 = 2;

/// A method's verification keys.
pub(crate) enum ClientKeys {
    /// Parsed once from the configuration.
    Fixed(KeySet),
    /// A file, re-read when it changes.
    File(Arc<KeyFile>),
    /// A URL, cached.
    Remote(Arc<JwksCache>),
}

impl ClientKeys {
    /// Keys from an inline JWKS; an unusable key is an error here (it is configuration).
    pub(crate) fn inline(json: &[u8], algorithms: &[JwsAlgorithm]) -> Result<Self, String> {
        let (keys, skipped) = KeySet::from_jwks(json, algorithms).map_err(|e| e.to_string())?;
        if skipped > 0 || keys.is_empty() {
            return Err(format!(
                "jwks: {skipped} unusable key(s), {} usable: every key must be an asymmetric signing key of an allowed algorithm",
                keys.len()
            ));
        }
        Ok(ClientKeys::Fixed(keys))
    }

    /// What keeps these keys current: a keeper for a URL, a watch for a file.
    pub(crate) fn tasks(&self) -> Vec<Task> {
        match self {
            ClientKeys::Fixed(_) => Vec::new(),
            ClientKeys::File(file) => {
                let file = Arc::clone(file);
                vec![Box::pin(async move {
                    crate::reload::watch(KEY_FILE_WATCH_SECONDS, move || file.reload()).await;
                })]
            }
            ClientKeys::Remote(cache) => {
                let cache = Arc::clone(cache);
                vec![Box::pin(async move { cache.keep().await })]
            }
        }
    }

    /// Verifies `jws` with these keys (RFC 8725 §3.1: the key binds the algorithm).
    pub(crate) async fn verify(&self, jws: &CompactJws<'_>) -> Result<(), ClientAuthError> {
        let result = match self {
            ClientKeys::Fixed(keys) => jws.verify_with(keys).map_err(CachedVerifyError::Signature),
            ClientKeys::File(file) => jws
                .verify_with(&file.current())
                .map_err(CachedVerifyError::Signature),
            ClientKeys::Remote(cache) => cache.verify(jws).await,
        };
        result.map_err(|e| match e {
            CachedVerifyError::Unavailable => ClientAuthError::KeysUnavailable,
            CachedVerifyError::Signature(SignatureError::UnknownKid) => ClientAuthError::UnknownKid,
            CachedVerifyError::Signature(SignatureError::KidRequired) => {
                ClientAuthError::KidRequired
            }
            CachedVerifyError::Signature(SignatureError::AlgorithmKeyMismatch) => {
                ClientAuthError::AlgorithmKeyMismatch
            }
            CachedVerifyError::Signature(SignatureError::BadSignature) => {
                ClientAuthError::BadSignature
            }
        })
    }
}

/// Keys read from a file, replaced when its contents change and still parse with at
/// least one usable key; otherwise the keys in force stay (logged once per change).
pub(crate) struct KeyFile {
    path: PathBuf,
    format: KeyFormat,
    algorithms: Vec<JwsAlgorithm>,
    current: RwLock<Arc<KeySet>>,
    seen: Mutex<[u8; 32]>,
}

impl KeyFile {
    /// Reads the file now (start-up: a missing or unusable file stops the service).
    pub(crate) fn load(
        path: PathBuf,
        format: KeyFormat,
        algorithms: Vec<JwsAlgorithm>,
    ) -> Result<Self, String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let keys =
            parse(&bytes, format, &algorithms).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            seen: Mutex::new(fingerprint([bytes.as_slice()])),
            path,
            format,
            algorithms,
            current: RwLock::new(Arc::new(keys)),
        })
    }

    /// The keys in force.
    pub(crate) fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the file again; puts its keys in force when it changed and is usable.
    pub(crate) fn reload(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let read = std::fs::read(&self.path);
        let print = match &read {
            Ok(bytes) => fingerprint([bytes.as_slice()]),
            Err(e) => fingerprint([e.to_string().as_bytes()]),
        };
        if *seen == print {
            return;
        }
        *seen = print;
        let parsed = read
            .map_err(|e| e.to_string())
            .and_then(|bytes| parse(&bytes, self.format, &self.algorithms));
        match parsed {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "client key file reloaded");
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "client key file reload failed: the previous keys stay in force");
            }
        }
    }
}

fn parse(bytes: &[u8], format: KeyFormat, algorithms: &[JwsAlgorithm]) -> Result<KeySet, String> {
    let parsed = match format {
        KeyFormat::Jwks => KeySet::from_jwks(bytes, algorithms),
        KeyFormat::SpiffeBundle => KeySet::from_spiffe_bundle(bytes, algorithms),
    };
    let (keys, _) = parsed.map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Err("no usable key".into());
    }
    Ok(keys)
}
