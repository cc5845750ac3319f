//! Signing-key rotation: the key ring and its reload.
//!
//! With `signing.key_dir`, the keys and their schedule come from `<key_dir>/keys.toml`:
//!
//! ```toml
//! [[keys]]
//! file = "2026-10.pem"          # PEM private key, relative to the directory
//! not_before = 2026-10-01T00:00:00Z
//!
//! [[keys]]
//! file = "2026-11.pem"
//! not_before = 2026-11-24T00:00:00Z
//! algorithm = "EdDSA"           # default: signing.algorithm
//! ```
//!
//! At time `t` the **signing** key is the one with the latest `not_before` ≤ `t`. The
//! **published** keys (our JWKS) are every key that has not started signing yet, the
//! signing key, and each earlier key until `retire_after` (the longest token lifetime
//! plus the leeway) has passed since its successor took over: its last token has expired
//! by then. So a new key is in the JWKS from the moment it is added, and signs only from
//! its `not_before`; a reload refuses a new key whose `not_before` is less than
//! `signing.publish_ahead_seconds` away, so verifiers that cache our JWKS (most libraries
//! keep it for minutes and refetch on an unknown `kid` at most every few seconds) have it
//! before any token it signs. Our own tokens, when they come back for re-exchange, verify
//! only with a published key that has started signing: a key out of the JWKS (a leaked old
//! one, say) verifies nothing.
//!
//! A reload also refuses to change the `not_before` of a key that has signed (or to bring
//! an upcoming one closer than `publish_ahead_seconds`), and to drop a key that has signed
//! while it is still published: its tokens may still be valid.
//!
//! The schedule is time-driven: no reload is needed for the switch itself. Adding or
//! removing keys is a reload (SIGHUP, or a change of the directory's files); a bad
//! directory keeps the previous ring in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::Deserialize;

use super::{KeyError, SigningKey};
use crate::clock::Clock;
use crate::config::{ConfigError, KeySource};
use crate::jose::{JwsAlgorithm, KeySet, b64_encode};
use crate::metrics::Metrics;
use crate::reload::Reloaded;

/// A key of the ring, with its schedule and its JOSE headers precomputed.
#[derive(Debug)]
pub struct RingKey {
    key: SigningKey,
    not_before: u64,
    header_access_token: String,
    header_jwt: String,
    /// Its public key alone, for verifying the tokens it signed.
    verifying: KeySet,
}

impl RingKey {
    fn new(key: SigningKey, not_before: u64) -> Result<Self, KeyError> {
        let header = |typ: &str| {
            b64_encode(
                format!(
                    r#"{{"alg":"{}","kid":"{}","typ":"{typ}"}}"#,
                    key.alg().as_str(),
                    key.kid()
                )
                .as_bytes(),
            )
        };
        Ok(Self {
            header_access_token: header("at+jwt"),
            header_jwt: header("JWT"),
            verifying: KeySet::from_keys(vec![key.verifying_key()?]),
            key,
            not_before,
        })
    }

    /// The private key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// When it starts signing (Unix seconds; 0 for a single key file).
    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    /// The base64url JOSE header for an access token (`typ` `at+jwt`) or a `jwt`.
    pub fn header(&self, access_token: bool) -> &str {
        if access_token {
            &self.header_access_token
        } else {
            &self.header_jwt
        }
    }
}

/// The signing keys and their schedule, immutable once built.
#[derive(Debug)]
pub struct KeyRing {
    /// By `not_before`, earliest first.
    keys: Vec<RingKey>,
    retire_after: u64,
}

impl KeyRing {
    /// A ring of one key that always signs (`signing.key_file`, `gleipnir dev`).
    pub fn single(key: SigningKey) -> Result<Self, KeyError> {
        Ok(Self::new(vec![RingKey::new(key, 0)?], 0))
    }

    fn new(mut keys: Vec<RingKey>, retire_after: u64) -> Self {
        keys.sort_by_key(|k| k.not_before);
        Self { keys, retire_after }
    }

    /// The key that signs at `now`: the latest whose `not_before` has come.
    pub fn signer(&self, now: u64) -> Option<&RingKey> {
        self.keys.iter().rev().find(|k| k.not_before <= now)
    }

    /// The keys our JWKS publishes at `now`: those not signing yet, the signer, and the
    /// earlier ones whose last token may still be valid.
    pub fn published(&self, now: u64) -> Vec<&SigningKey> {
        self.published_at(now).map(|k| &k.key).collect()
    }

    fn published_at(&self, now: u64) -> impl Iterator<Item = &RingKey> {
        self.keys.iter().enumerate().filter_map(move |(i, k)| {
            let successor = self.keys.get(i + 1).map(|s| s.not_before);
            let published = match successor {
                // Retired when its successor took over; published until its last token
                // expired.
                Some(taken_over) if taken_over <= now => {
                    now < taken_over.saturating_add(self.retire_after)
                }
                // Signing now, or not yet: published.
                _ => true,
            };
            published.then_some(k)
        })
    }

    /// The key that verifies our own token with `kid` at `now`: only a published key that
    /// has started signing. A retired key's tokens have all expired once it leaves the
    /// JWKS, so it verifies nothing after that (a leaked old key mints nothing), and an
    /// upcoming key has signed nothing yet. Without `kid`, the signer.
    pub fn verifying_keys(&self, kid: Option<&str>, now: u64) -> Option<&KeySet> {
        let mut candidates = self.published_at(now).filter(|k| k.not_before <= now);
        match kid {
            Some(kid) => candidates.find(|k| k.key.kid() == kid),
            None => self.signer(now),
        }
        .map(|k| &k.verifying)
    }

    /// The algorithms of the ring's keys.
    pub fn algorithms(&self) -> Vec<JwsAlgorithm> {
        let mut algs: Vec<JwsAlgorithm> = Vec::new();
        for k in &self.keys {
            if !algs.contains(&k.key.alg()) {
                algs.push(k.key.alg());
            }
        }
        algs
    }

    fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.key.kid())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    keys: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    file: String,
    not_before: toml::value::Datetime,
    algorithm: Option<String>,
}

/// Where a rotating ring comes from.
#[derive(Debug, Clone)]
struct DirSource {
    dir: PathBuf,
    algorithm: JwsAlgorithm,
    publish_ahead: u64,
    watch_seconds: u64,
}

/// Holds the key ring in force and replaces it on reload.
pub struct KeyStore {
    current: RwLock<Arc<KeyRing>>,
    source: Option<DirSource>,
    retire_after: u64,
    seen: Mutex<[u8; 32]>,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyStore")
    }
}

/// The manifest of a key directory.
pub const MANIFEST: &str = "keys.toml";

impl KeyStore {
    /// Loads the signing key(s) the configuration names. `retire_after` is how long a key
    /// stays published after its successor took over (longest token lifetime + leeway).
    pub fn load(
        source: &KeySource,
        algorithm: JwsAlgorithm,
        retire_after: u64,
        clock: Clock,
        metrics: Arc<Metrics>,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let (ring, source, seen) = match source {
            KeySource::File(path) => {
                let key = SigningKey::from_pem_file(algorithm, path).map_err(|e| {
                    ConfigError::new(
                        origin,
                        "signing.key_file",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                let ring = KeyRing::single(key)
                    .map_err(|e| ConfigError::new(origin, "signing.key_file", e.to_string()))?;
                (ring, None, [0u8; 32])
            }
            KeySource::Ephemeral => {
                let ring = SigningKey::ephemeral(algorithm)
                    .and_then(KeyRing::single)
                    .map_err(|e| ConfigError::new(origin, "signing", e.to_string()))?;
                (ring, None, [0u8; 32])
            }
            KeySource::Dir {
                path,
                publish_ahead_seconds,
                watch_seconds,
            } => {
                let source = DirSource {
                    dir: path.clone(),
                    algorithm,
                    publish_ahead: *publish_ahead_seconds,
                    watch_seconds: *watch_seconds,
                };
                let (ring, seen) = load_dir(&source, retire_after, clock.now(), None)?;
                (ring, Some(source), seen)
            }
        };
        Ok(Self {
            current: RwLock::new(Arc::new(ring)),
            source,
            retire_after,
            seen: Mutex::new(seen),
            clock,
            metrics,
        })
    }

    /// The ring in force.
    pub fn current(&self) -> Arc<KeyRing> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the key directory again and puts it in force (SIGHUP); with `force` false,
    /// files identical to the last ones read are skipped (the watch).
    pub fn reload(&self, force: bool) -> Result<Reloaded, ConfigError> {
        let Some(source) = &self.source else {
            return Ok(Reloaded::Unchanged);
        };
        let result = (|| {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            // The same unreadable directory is reported once, like the same bad files.
            let print = fingerprint(&source.dir)
                .unwrap_or_else(|e| crate::reload::fingerprint([e.to_string().as_bytes()]));
            if !force && print == *seen {
                return Ok(Reloaded::Unchanged);
            }
            *seen = print;
            let current = self.current();
            let (ring, _) = load_dir(source, self.retire_after, self.clock.now(), Some(&current))?;
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
            Ok(Reloaded::Applied)
        })();
        match &result {
            Ok(Reloaded::Applied) => {
                self.metrics.signing_keys_reload(true);
                let ring = self.current();
                let kids: Vec<&str> = ring.kids().collect();
                tracing::info!(kids = ?kids, "signing keys reloaded");
            }
            Ok(Reloaded::Unchanged) => {}
            Err(e) => {
                self.metrics.signing_keys_reload(false);
                tracing::error!(error = %e, "signing key reload failed: the previous keys stay in force");
            }
        }
        result
    }

    /// Checks the key directory every `signing.watch_seconds` and reloads what changed.
    pub async fn watch(self: Arc<Self>) {
        let seconds = self.source.as_ref().map_or(0, |s| s.watch_seconds);
        crate::reload::watch(seconds, move || {
            let _ = self.reload(false);
        })
        .await;
    }
}

/// The fingerprint of the directory's files: names and contents, in name order.
fn fingerprint(dir: &Path) -> std::io::Result<[u8; 32]> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = zeroize::Zeroizing::new(std::fs::read(&path)?);
        files.push((path.display().to_string(), bytes));
    }
    Ok(crate::reload::fingerprint(files.iter().flat_map(
        |(name, bytes)| [name.as_bytes(), bytes.as_slice()],
    )))
}

/// Reads `<dir>/keys.toml` and its keys. With `previous` (a reload), a key new to the ring
/// must start signing at least `publish_ahead` from `now`.
fn load_dir(
    source: &DirSource,
    retire_after: u64,
    now: u64,
    previous: Option<&KeyRing>,
) -> Result<(KeyRing, [u8; 32]), ConfigError> {
    let manifest = source.dir.join(MANIFEST);
    let file = manifest.display().to_string();
    let err = |field: String, reason: String| ConfigError::new(file.clone(), field, reason);
    let print = fingerprint(&source.dir).map_err(|e| {
        err(
            "signing.key_dir".into(),
            format!("cannot read {}: {e}", source.dir.display()),
        )
    })?;
    let text = std::fs::read_to_string(&manifest).map_err(|e| {
        err(
            "signing.key_dir".into(),
            format!("cannot read {MANIFEST}: {e}"),
        )
    })?;
    let raw: RawManifest =
        toml::from_str(&text).map_err(|e| crate::config::toml_error(&file, &text, &e))?;
    if raw.keys.is_empty() {
        return Err(err("keys".into(), "must list at least one [[keys]]".into()));
    }
    let mut keys = Vec::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.iter().enumerate() {
        let at = |f: &str| format!("keys[{i}].{f}");
        let algorithm = match k.algorithm.as_deref() {
            None => source.algorithm,
            Some(name) => JwsAlgorithm::from_name(name)
                .filter(|a| matches!(a, JwsAlgorithm::Es256 | JwsAlgorithm::EdDsa))
                .ok_or_else(|| err(at("algorithm"), "must be ES256 or EdDSA".into()))?,
        };
        let not_before = unix_seconds(&k.not_before).ok_or_else(|| {
            err(
                at("not_before"),
                "must be a date and time with an offset, e.g. 2026-11-24T00:00:00Z".into(),
            )
        })?;
        let path = source.dir.join(&k.file);
        let key = SigningKey::from_pem_file(algorithm, &path)
            .map_err(|e| err(at("file"), format!("{}: {e}", path.display())))?;
        if keys.iter().any(|r: &RingKey| r.key.kid() == key.kid()) {
            return Err(err(at("file"), "the same key is listed twice".into()));
        }
        let before = previous.and_then(|p| p.keys.iter().find(|k| k.key.kid() == key.kid()));
        let ahead = now.saturating_add(source.publish_ahead);
        if let Some(before) = before
            && before.not_before != not_before
            && (before.not_before <= now || not_before < ahead)
        {
            return Err(err(
                at("not_before"),
                format!(
                    "a key's schedule can change only while it is not signing yet and its new not_before is at least signing.publish_ahead_seconds ({}) away: {}",
                    source.publish_ahead, ahead
                ),
            ));
        }
        if previous.is_some() && before.is_none() && not_before < ahead {
            return Err(err(
                at("not_before"),
                format!(
                    "a new key must be published for signing.publish_ahead_seconds ({}) before it signs: not_before must be at least {}",
                    source.publish_ahead,
                    now.saturating_add(source.publish_ahead)
                ),
            ));
        }
        keys.push(RingKey::new(key, not_before).map_err(|e| err(at("file"), e.to_string()))?);
    }
    let ring = KeyRing::new(keys, retire_after);
    // A key that has signed and may still have live tokens stays until they expire.
    if let Some(previous) = previous
        && let Some(gone) = previous
            .published_at(now)
            .filter(|k| k.not_before <= now)
            .find(|k| !ring.kids().any(|kid| kid == k.key.kid()))
    {
        return Err(err(
            "keys".into(),
            format!(
                "key {} has signed tokens that may still be valid: keep it listed until it leaves the JWKS",
                gone.key.kid()
            ),
        ));
    }
    if ring.signer(now).is_none() {
        return Err(err(
            "keys".into(),
            "no key may sign now: at least one not_before must have passed".into(),
        ));
    }
    if previous.is_none() {
        for k in ring.keys.iter().filter(|k| k.not_before > now) {
            if k.not_before < now.saturating_add(source.publish_ahead) {
                tracing::warn!(
                    kid = k.key.kid(),
                    "a key starts signing sooner than signing.publish_ahead_seconds from now: verifiers that cached our JWKS before it appeared may refuse its first tokens"
                );
            }
        }
    }
    Ok((ring, print))
}

/// A TOML offset date-time as Unix seconds (fractions dropped).
fn unix_seconds(dt: &toml::value::Datetime) -> Option<u64> {
    let (date, time, offset) = (dt.date?, dt.time?, dt.offset?);
    let days = days_from_civil(
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let offset_minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let seconds = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0))
        - offset_minutes * 60;
    u64::try_from(seconds).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::ephemeral(JwsAlgorithm::Es256).unwrap()
    }

    #[test]
    fn dates_convert_to_unix_seconds() {
        let dt = |s: &str| s.parse::<toml::value::Datetime>().unwrap();
        assert_eq!(unix_seconds(&dt("1970-01-01T00:00:00Z")), Some(0));
        assert_eq!(
            unix_seconds(&dt("2026-11-24T00:00:00Z")),
            Some(1_795_478_400)
        );
        assert_eq!(
            unix_seconds(&dt("2026-11-24T01:00:00+01:00")),
            Some(1_795_478_400)
        );
        assert_eq!(unix_seconds(&dt("2000-03-01T12:30:15Z")), Some(951_913_815));
        assert_eq!(unix_seconds(&dt("2026-11-24T00:00:00")), None, "no offset");
        assert_eq!(unix_seconds(&dt("2026-11-24")), None);
    }

    #[test]
    fn schedule_signs_with_the_latest_due_key_and_publishes_ahead_and_behind() {
        let (a, b, c) = (key(), key(), key());
        let kids = [a.kid().to_owned(), b.kid().to_owned(), c.kid().to_owned()];
        let ring = KeyRing::new(
            vec![
                RingKey::new(b, 2000).unwrap(),
                RingKey::new(a, 1000).unwrap(),
                RingKey::new(c, 3000).unwrap(),
            ],
            600,
        );
        let published = |now| -> Vec<String> {
            ring.published(now)
                .iter()
                .map(|k| k.kid().to_owned())
                .collect()
        };
        let signer = |now| ring.signer(now).map(|k| k.key().kid().to_owned());
        assert_eq!(signer(999), None);
        assert_eq!(signer(1000), Some(kids[0].clone()));
        assert_eq!(signer(1999), Some(kids[0].clone()));
        assert_eq!(signer(2000), Some(kids[1].clone()));
        assert_eq!(signer(5000), Some(kids[2].clone()));
        // Before b signs: all three published (b and c ahead of time).
        assert_eq!(published(1500), kids.to_vec());
        // a retired at 2000, published until 2600.
        assert_eq!(published(2599), kids.to_vec());
        assert_eq!(published(2600), kids[1..].to_vec());
        // b retired at 3000: published until 3600; c signs.
        assert_eq!(published(3599), kids[1..].to_vec());
        assert_eq!(published(3600), kids[2..].to_vec());
        // Verification: a published key that has started signing, and nothing else.
        let verifies = |kid: &str, now| ring.verifying_keys(Some(kid), now).is_some();
        assert!(
            verifies(&kids[0], 2599),
            "a retired key until its tokens expired"
        );
        assert!(
            !verifies(&kids[0], 2600),
            "a withdrawn key verifies nothing"
        );
        assert!(
            !verifies(&kids[2], 2999),
            "an upcoming key has signed nothing"
        );
        assert!(verifies(&kids[2], 3000));
        assert!(!verifies("unknown", 3000));
    }
}
