//! The keys of one upstream issuer, fetched from its `jwks_uri` and cached (rules §4).
//!
//! - Fetches are bounded in time (connect 2 s, total 5 s, set on the shared client) and
//!   size (128 KiB, 64 keys), follow no redirects, and parse keys one by one (an unusable
//!   key is skipped, an `oct` key ignored).
//! - Without a configured `jwks_uri`, it is read from the issuer's own metadata (OIDC
//!   Discovery, then RFC 8414), which must name exactly the configured issuer; it is read
//!   again after a JWKS fetch fails, so a moved JWKS is followed.
//! - Keys are fresh for `Cache-Control: max-age`, clamped to [1 min, 1 h] (default
//!   10 min). A keeper task per issuer ([`JwksCache::maintain`]) refreshes them shortly
//!   before they expire, so requests never wait for a routine refresh.
//! - When the issuer is down, the last good keys keep being served up to the issuer's
//!   maximum staleness (default 12 h); the keeper refreshes before that bound too. After
//!   it, and when there never were keys, token validation fails closed (503).
//! - A JWKS without a usable key (`{"keys":[]}`, only `oct` keys, only keys we cannot
//!   use) is a failed fetch, like an outage: it never replaces usable keys still within
//!   the staleness bound, it is counted in the fetch-failure metric, and it is retried on
//!   the failure backoff, not after the `max-age` it came with. One such answer, which a
//!   client can provoke with an unknown `kid`, must not refuse the issuer's tokens long
//!   after the issuer repaired it. An issuer that really withdraws all its keys sees its
//!   tokens accepted up to the staleness bound; with no keys ever fetched, requests fail
//!   closed (503).
//! - Only the keeper fetches (it is never cancelled, and it backs off 1, 2, 4, 8 s after
//!   failures, counted from when the attempt ended; after a failed fetch, whichever
//!   started it, it retries on that backoff until one succeeds). A failure streak is
//!   logged once, as a warning naming the issuer, the URL and the cause; the fetch that
//!   ends it says how many attempts failed. A request without usable keys waits for the
//!   attempt in flight, if any, at most 5 s, and takes its outcome, success or failure:
//!   an outage causes neither a fetch storm nor requests queueing behind timeouts.
//! - A token whose `kid` is not among the keys held may force one refetch ahead of the
//!   keeper, so a key the issuer has just started signing with is accepted at once, even
//!   right after a routine fetch. Forced refetches: at most one per 30 s per issuer,
//!   counted from the last forced one only (a keeper fetch starts no cooldown), none
//!   while the failure backoff runs; requests arriving while one is in flight wait for
//!   it and share it; a failed one never discards the keys we had. When the `kid` is
//!   still not found ([`Refreshed::confirmed`]):
//!   - in keys from a fetch that started after the request found the `kid` unknown (the
//!     forced refetch it caused or waited for, or a keeper fetch): the token names a key
//!     its issuer does not publish, the client's fault: 400 `invalid_request`, reason
//!     `unknown_kid`;
//!   - otherwise (cooldown, backoff, the refetch failed, or the fetch it waited for had
//!     started before it asked): the key may well exist, we could not fetch it yet: 503
//!     `temporarily_unavailable`, reason `keys_unavailable`, with `Retry-After`.
//! - Every decision about time reads our [`Clock`], so tests can move time by hours. Each
//!   issuer has its own cache, lock and keeper: one failing issuer never slows another.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use tracing::Instrument as _;

use super::{Backoff, ReadError, read_capped};
use crate::clock::Clock;
use crate::config::{IssuerConfig, JwksLocation, url_allowed};
use crate::jose::jws::{CompactJws, SignatureError};
use crate::jose::{JsonObject, JwsAlgorithm, KeyLookup, KeySet, MAX_JWKS_BYTES};
use crate::metrics::JwksStats;

/// What a key cache fetches, and how: an upstream issuer's JWKS, a client's JWKS, a
/// Kubernetes cluster's service-account keys, a SPIFFE bundle endpoint. All share the
/// same client, limits, freshness, staleness and unknown-`kid` rules.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// A name for logs and metrics.
    pub name: String,
    /// The issuer whose metadata names the JWKS (with [`JwksLocation::Discover`]).
    pub issuer: String,
    /// Where the keys are.
    pub location: JwksLocation,
    /// Plain-http URLs allowed.
    pub allow_http: bool,
    /// The algorithms a key may be bound to.
    pub algorithms: Vec<JwsAlgorithm>,
    /// How long after a successful fetch the keys may still be used.
    pub max_staleness: u64,
    /// A bearer token sent with every fetch, read from this file each time (a Kubernetes
    /// API server asks for one; the kubelet rotates the file, and the next fetch reads
    /// the new token). The token is never logged.
    pub bearer_token_file: Option<PathBuf>,
    /// How the document is read.
    pub format: KeyFormat,
}

/// How a fetched key document is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// A JWKS (RFC 7517 §5).
    Jwks,
    /// A SPIFFE trust bundle: a JWKS whose JWT-SVID keys say `use: jwt-svid`.
    SpiffeBundle,
}

/// Why a signature could not be verified with cached keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachedVerifyError {
    /// The keys held (after any refetch the unknown-`kid` rule allowed) refused it.
    Signature(SignatureError),
    /// No usable keys, or a `kid` not among them that a refetch could not confirm yet.
    Unavailable,
}

const DEFAULT_TTL: u64 = 600;
const MIN_TTL: u64 = 60;
const MAX_TTL: u64 = 3600;
/// Minimum time between two fetches forced by an unknown `kid`, in seconds.
pub const UNKNOWN_KID_COOLDOWN: u64 = 30;
/// How often each keeper looks at its issuer's keys.
pub const KEEPER_TICK: Duration = Duration::from_millis(500);
/// Longest a request waits for a fetch in flight.
const WAIT_FOR_FETCH: Duration = Duration::from_secs(5);

/// Why the keys could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// Connection refused, timed out, TLS failure.
    #[error("request failed: {0}")]
    Transport(String),
    /// The issuer answered with a status other than 200 (redirects are not followed).
    #[error("unexpected status {0}")]
    Status(u16),
    /// The body exceeded the size cap.
    #[error("JWKS larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The body is not a usable JWKS.
    #[error("{0}")]
    Malformed(String),
    /// The issuer's metadata is unusable: not JSON, another `issuer`, no usable `jwks_uri`.
    #[error("metadata: {0}")]
    Metadata(&'static str),
    /// A valid JWKS with no key we may use (empty, only `oct`, only unusable keys).
    #[error("JWKS has no usable key ({skipped} skipped)")]
    NoUsableKey {
        /// Keys skipped as unsupported or malformed (`oct` keys are not counted).
        skipped: usize,
    },
}

impl FetchError {
    /// A stable name of the failure (span attributes).
    pub fn as_str(&self) -> &'static str {
        match self {
            FetchError::Transport(_) => "transport",
            FetchError::Status(_) => "status",
            FetchError::TooLarge => "too_large",
            FetchError::Malformed(_) => "malformed",
            FetchError::Metadata(_) => "metadata",
            FetchError::NoUsableKey { .. } => "no_usable_key",
        }
    }
}

/// A failed fetch and the URL it was for (`None`: the `jwks_uri` could not be found).
struct Failed {
    url: Option<reqwest::Url>,
    error: FetchError,
}

/// Keys as fetched, with when (our clock, Unix seconds) and until when they are fresh.
#[derive(Debug)]
pub struct FetchedKeys {
    /// The usable keys (never empty: a JWKS without one is a failed fetch).
    pub keys: KeySet,
    /// Which fetch attempt got them (the `fetches` count once it started).
    attempt: u64,
    fetched_at: u64,
    fresh_until: u64,
}

#[derive(Default)]
struct FetchState {
    /// Failures in a row, and when the last attempt ended.
    backoff: Backoff,
    /// When the last fetch forced by an unknown `kid` started.
    last_forced: Option<u64>,
}

impl FetchState {
    /// Whether a fetch forced by an unknown `kid` started less than the cooldown before
    /// `now`. A clock stepped back ends the cooldown rather than stretching it.
    fn cooling_down(&self, now: u64) -> bool {
        self.last_forced
            .is_some_and(|f| now >= f && now < f.saturating_add(UNKNOWN_KID_COOLDOWN))
    }
}

/// The keys a request gets back after finding its `kid` unknown.
pub struct Refreshed {
    /// The keys to validate with: the newest we have.
    pub fetched: Arc<FetchedKeys>,
    /// Whether `fetched` come from a fetch that started after the request found its `kid`
    /// unknown. If so, a `kid` they lack is the token's fault; if not, it may be a key
    /// we could not fetch yet.
    pub confirmed: bool,
}

/// The JWKS of one issuer.
pub struct JwksCache {
    name: String,
    issuer: String,
    location: JwksLocation,
    allow_http: bool,
    bearer_token_file: Option<PathBuf>,
    format: KeyFormat,
    /// The `jwks_uri` found in the issuer's metadata (discovery only); forgotten when a
    /// JWKS fetch fails, so a moved JWKS is found again.
    discovered: RwLock<Option<reqwest::Url>>,
    algorithms: Vec<JwsAlgorithm>,
    http: reqwest::Client,
    clock: Clock,
    max_staleness: u64,
    /// The keys in use: read on every validation, replaced only by a successful fetch.
    current: RwLock<Option<Arc<FetchedKeys>>>,
    /// One fetch at a time; held across it on purpose (the miss path only).
    fetch: tokio::sync::Mutex<FetchState>,
    fetches: AtomicU64,
    failures: AtomicU64,
    /// Whether the last fetch failed: the keeper then retries on the backoff even when
    /// the keys it has are not due.
    failing: AtomicBool,
}

impl JwksCache {
    /// The cache of `issuer`'s keys.
    pub fn new(issuer: &IssuerConfig, http: reqwest::Client, clock: Clock) -> Self {
        Self::from_source(
            KeySource {
                name: issuer.name.clone(),
                issuer: issuer.issuer.clone(),
                location: issuer.jwks.clone(),
                allow_http: issuer.allow_http,
                algorithms: issuer.algorithms.clone(),
                max_staleness: issuer.max_staleness_seconds,
                bearer_token_file: None,
                format: KeyFormat::Jwks,
            },
            http,
            clock,
        )
    }

    /// The cache of the keys `source` names.
    pub fn from_source(source: KeySource, http: reqwest::Client, clock: Clock) -> Self {
        Self {
            name: source.name,
            issuer: source.issuer,
            location: source.location,
            allow_http: source.allow_http,
            bearer_token_file: source.bearer_token_file,
            format: source.format,
            discovered: RwLock::new(None),
            algorithms: source.algorithms,
            http,
            clock,
            max_staleness: source.max_staleness,
            current: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// The issuer's name, for logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn current(&self) -> Option<Arc<FetchedKeys>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The keys, if there are any not older than the maximum staleness at `now`.
    fn usable(&self, now: u64) -> Option<Arc<FetchedKeys>> {
        self.current()
            .filter(|k| !k.keys.is_empty() && now < k.fetched_at.saturating_add(self.max_staleness))
    }

    /// Whether there are keys to validate with now (readiness).
    pub fn has_usable_keys(&self) -> bool {
        self.usable(self.clock.now()).is_some()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> JwksStats {
        let current = self.current();
        JwksStats {
            fetches: self.fetches.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            keys: current.as_ref().map_or(0, |k| k.keys.len()),
            fetched_at: current.map(|k| k.fetched_at),
        }
    }

    /// The keys to validate with: fresh or stale-but-within-bound keys at once (the keeper
    /// refreshes them). Without usable keys, waits for the keeper's attempt in flight (at
    /// most 5 s) and takes its outcome; never fetches itself. `None`: fail closed.
    pub async fn keys(&self) -> Option<Arc<FetchedKeys>> {
        if let Some(keys) = self.usable(self.clock.now()) {
            return Some(keys);
        }
        let _attempt_over = tokio::time::timeout(WAIT_FOR_FETCH, self.fetch.lock())
            .await
            .ok()?;
        self.usable(self.clock.now())
    }

    /// Verifies `jws` with the keys held; a `kid` they lack may force one refetch (see
    /// [`refresh_for_unknown_kid`](Self::refresh_for_unknown_kid)). Still unknown in keys
    /// fetched after the token came: the token's fault ([`SignatureError::UnknownKid`]);
    /// otherwise it may be a key we could not fetch yet ([`CachedVerifyError::Unavailable`]).
    pub async fn verify(&self, jws: &CompactJws<'_>) -> Result<(), CachedVerifyError> {
        let fetched = self.keys().await.ok_or(CachedVerifyError::Unavailable)?;
        match jws.verify_with(&fetched.keys) {
            Err(SignatureError::UnknownKid) => {
                let kid = jws.header.kid.as_deref();
                let lacks_kid =
                    |keys: &KeySet| matches!(keys.find(kid, jws.alg), KeyLookup::UnknownKid);
                let refreshed = self.refresh_for_unknown_kid(&fetched, lacks_kid).await;
                match jws.verify_with(&refreshed.fetched.keys) {
                    Err(SignatureError::UnknownKid) if !refreshed.confirmed => {
                        Err(CachedVerifyError::Unavailable)
                    }
                    other => other.map_err(CachedVerifyError::Signature),
                }
            }
            other => other.map_err(CachedVerifyError::Signature),
        }
    }

    /// Called when a token names a `kid` that `seen` does not have (`lacks_kid` tells
    /// whether a key set still lacks it). Forces a refetch unless one started within the
    /// cooldown or the failure backoff runs; concurrent callers wait for that one fetch
    /// and share its result. A failed refetch keeps the keys we had. See the module doc
    /// for what [`Refreshed::confirmed`] decides.
    pub async fn refresh_for_unknown_kid(
        &self,
        seen: &Arc<FetchedKeys>,
        lacks_kid: impl Fn(&KeySet) -> bool,
    ) -> Refreshed {
        // Attempts numbered above this one started after the kid was found unknown.
        let asked = self.fetches.load(Ordering::SeqCst);
        let mut state = self.fetch.lock().await;
        let current = self.current().unwrap_or_else(|| Arc::clone(seen));
        let confirmed = current.attempt > asked;
        if confirmed || !lacks_kid(&current.keys) {
            return Refreshed {
                fetched: current,
                confirmed,
            }; // refreshed while we waited
        }
        let now = self.clock.now();
        if state.cooling_down(now) || state.backoff.backing_off(now) {
            return Refreshed {
                fetched: current,
                confirmed: false,
            };
        }
        state.last_forced = Some(now);
        tracing::info!(issuer = %self.name, "unknown kid: refetching JWKS");
        match self.fetch_locked(&mut state).await {
            Some(fetched) => Refreshed {
                fetched,
                confirmed: true,
            },
            // After a failure (a JWKS without usable key included): the keys we had.
            None => Refreshed {
                fetched: current,
                confirmed: false,
            },
        }
    }

    /// One keeper step: fetches when there are no keys, after a failed fetch (a request's
    /// forced refetch included), or within a tenth of their lifetime (at least a second)
    /// of the earlier of their expiry and the staleness bound, unless backing off.
    pub async fn maintain(&self) {
        let due = |now: u64| match self.current() {
            None => true,
            Some(k) => {
                let deadline = k
                    .fresh_until
                    .min(k.fetched_at.saturating_add(self.max_staleness));
                let margin = (deadline.saturating_sub(k.fetched_at) / 10).max(1);
                now.saturating_add(margin) >= deadline || now < k.fetched_at
            }
        };
        if !due(self.clock.now()) && !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.fetch.lock().await;
        let now = self.clock.now();
        if (due(now) || state.backoff.failing()) && !state.backoff.backing_off(now) {
            self.fetch_locked(&mut state).await;
        }
    }

    /// Runs [`maintain`](Self::maintain) forever (until the task is aborted).
    pub async fn keep(&self) {
        loop {
            self.maintain().await;
            tokio::time::sleep(KEEPER_TICK).await;
        }
    }

    /// One fetch attempt, in its span: the parent of its discovery and JWKS calls; a child
    /// of the request that forced it, or (the keeper's) the root of a trace of its own.
    async fn fetch_locked(&self, state: &mut FetchState) -> Option<Arc<FetchedKeys>> {
        let span = tracing::info_span!(
            target: crate::telemetry::SPAN_TARGET,
            "jwks_refresh",
            gleipnir.issuer = %self.name,
            error.type = tracing::field::Empty,
        );
        let now = self.clock.now();
        let attempt = self
            .fetches
            .fetch_add(1, Ordering::SeqCst)
            .saturating_add(1);
        let fetched = self.fetch_inner(now).instrument(span.clone()).await;
        if let Err(Failed { error, .. }) = &fetched {
            span.record("error.type", error.as_str());
        }
        let streak = state.backoff.failures();
        // Backoff counts from the end of the attempt: a slow failure must not be retried
        // at once.
        state.backoff.ended(self.clock.now(), fetched.is_ok());
        self.failing.store(fetched.is_err(), Ordering::Relaxed);
        match fetched {
            Ok(fetched) => {
                let fetched = Arc::new(FetchedKeys { attempt, ..fetched });
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(Arc::clone(&fetched));
                tracing::info!(
                    issuer = %self.name,
                    keys = fetched.keys.len(),
                    fresh_for_s = fetched.fresh_until - fetched.fetched_at,
                    failed_before = streak,
                    "JWKS fetched"
                );
                Some(fetched)
            }
            Err(Failed { url, error }) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let kept = self.usable(now).is_some();
                let url = url
                    .as_ref()
                    .map_or("<not discovered>", reqwest::Url::as_str);
                // Once per streak: an issuer failing for hours is retried every 8 s, and
                // the first line says what went wrong; the recovery line ends the streak.
                if streak == 0 {
                    tracing::warn!(issuer = %self.name, url, error = %error, kept_last_good_keys = kept, "JWKS fetch failed (retrying with backoff; logged once until a fetch succeeds)");
                } else {
                    tracing::debug!(issuer = %self.name, url, error = %error, failures = streak + 1, kept_last_good_keys = kept, "JWKS fetch failed again");
                }
                None
            }
        }
    }

    async fn fetch_inner(&self, now: u64) -> Result<FetchedKeys, Failed> {
        let uri = self
            .jwks_uri()
            .await
            .map_err(|error| Failed { url: None, error })?;
        let fetched = self.fetch_jwks(uri.clone(), now).await;
        if fetched.is_err() && self.location == JwksLocation::Discover {
            *self
                .discovered
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        fetched.map_err(|error| Failed {
            url: Some(uri),
            error,
        })
    }

    async fn jwks_uri(&self) -> Result<reqwest::Url, FetchError> {
        if let JwksLocation::Uri(uri) = &self.location {
            return Ok(uri.clone());
        }
        let known = self
            .discovered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(uri) = known {
            return Ok(uri);
        }
        let uri = self.discover().await?;
        tracing::info!(issuer = %self.name, jwks_uri = %uri, "jwks_uri discovered from issuer metadata");
        *self
            .discovered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(uri.clone());
        Ok(uri)
    }

    /// The `jwks_uri` of the issuer's metadata: OpenID Connect Discovery §4
    /// (`<issuer>/.well-known/openid-configuration`), else RFC 8414 §3
    /// (`/.well-known/oauth-authorization-server` inserted before the issuer's path). The
    /// metadata must name exactly our configured issuer (OIDC Discovery §4.3, RFC 8414
    /// §3.3), and its `jwks_uri` follows the same scheme rule as a configured one.
    async fn discover(&self) -> Result<reqwest::Url, FetchError> {
        let issuer = reqwest::Url::parse(&self.issuer)
            .map_err(|_| FetchError::Metadata("issuer is not a URL"))?;
        let oidc = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let rfc8414 = format!(
            "{}/.well-known/oauth-authorization-server{}",
            issuer.origin().ascii_serialization(),
            issuer.path().trim_end_matches('/')
        );
        let body = match self
            .get_capped(&oidc, "application/json", "discovery")
            .await
        {
            Err(FetchError::Status(404)) => {
                self.get_capped(&rfc8414, "application/json", "discovery")
                    .await?
                    .0
            }
            other => other?.0,
        };
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let JsonObject(metadata) = serde_json::from_slice::<JsonObject<Metadata>>(&body)
            .map_err(|_| FetchError::Metadata("not a JSON object with issuer and jwks_uri"))?;
        if metadata.issuer != self.issuer {
            return Err(FetchError::Metadata(
                "issuer differs from the configured one",
            ));
        }
        let uri = reqwest::Url::parse(&metadata.jwks_uri)
            .map_err(|_| FetchError::Metadata("jwks_uri is not a URL"))?;
        if !url_allowed(&uri, self.allow_http) {
            return Err(FetchError::Metadata("jwks_uri is not an https URL"));
        }
        Ok(uri)
    }

    async fn fetch_jwks(&self, uri: reqwest::Url, now: u64) -> Result<FetchedKeys, FetchError> {
        let (body, cache_control) = self
            .get_capped(
                uri.as_str(),
                "application/jwk-set+json, application/json",
                "jwks_fetch",
            )
            .await?;
        let ttl = cache_control
            .as_deref()
            .map_or(DEFAULT_TTL, ttl_from_cache_control);
        let parsed = match self.format {
            KeyFormat::Jwks => KeySet::from_jwks(&body, &self.algorithms),
            KeyFormat::SpiffeBundle => KeySet::from_spiffe_bundle(&body, &self.algorithms),
        };
        let (keys, skipped) = parsed.map_err(|e| FetchError::Malformed(e.to_string()))?;
        if keys.is_empty() {
            // Nothing to validate with: a failure, so the keys we had stay in use (within
            // the staleness bound) and the keeper retries on the backoff.
            return Err(FetchError::NoUsableKey { skipped });
        }
        if skipped > 0 {
            tracing::warn!(issuer = %self.name, skipped, "JWKS keys skipped (unsupported or malformed)");
        }
        Ok(FetchedKeys {
            keys,
            attempt: 0, // set by fetch_locked
            fetched_at: now,
            fresh_until: now.saturating_add(ttl),
        })
    }

    /// GETs `url` with the shared client's limits (2 s connect, 5 s total, no redirects),
    /// reading at most [`MAX_JWKS_BYTES`]; returns the body and its Cache-Control. The call
    /// is a span named `call` (`discovery`, `jwks_fetch`) and carries its trace context.
    async fn get_capped(
        &self,
        url: &str,
        accept: &'static str,
        call: &'static str,
    ) -> Result<(Vec<u8>, Option<String>), FetchError> {
        let span = crate::upstream::call_span(call, &self.name, "GET", url);
        let got = self
            .get_capped_in(url, accept, &span)
            .instrument(span.clone())
            .await;
        if let Err(e) = &got {
            crate::upstream::note_outcome(&span, None, Some(e.as_str()));
        }
        got
    }

    async fn get_capped_in(
        &self,
        url: &str,
        accept: &'static str,
        span: &tracing::Span,
    ) -> Result<(Vec<u8>, Option<String>), FetchError> {
        let mut request = self
            .http
            .get(url)
            .headers(crate::upstream::trace_headers())
            .header(http::header::ACCEPT, accept);
        if let Some(path) = &self.bearer_token_file {
            let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                FetchError::Transport(format!("bearer token file {}: {e}", path.display()))
            })?;
            request = request.bearer_auth(token.trim());
        }
        let response = request
            .send()
            .await
            .map_err(|e| FetchError::Transport(crate::upstream::describe(e)))?;
        crate::upstream::note_outcome(span, Some(response.status().as_u16()), None);
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let cache_control = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_capped(response).await.map_err(|e| match e {
            ReadError::TooLarge => FetchError::TooLarge,
            ReadError::Transport(e) => FetchError::Transport(e),
        })?;
        Ok((body, cache_control))
    }
}

/// `max-age` from a Cache-Control value in seconds, clamped; `no-cache`/`no-store` mean
/// the minimum.
fn ttl_from_cache_control(value: &str) -> u64 {
    let mut ttl = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return MIN_TTL;
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            ttl = secs.trim_matches('"').parse::<u64>().ok();
        }
    }
    ttl.map_or(DEFAULT_TTL, |t| t.clamp(MIN_TTL, MAX_TTL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::upstream::MAX_BACKOFF;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    /// A one-route HTTP upstream on loopback; what it answers can be changed; counts requests.
    struct Upstream {
        url: reqwest::Url,
        hits: Arc<AtomicUsize>,
        answer: Arc<Mutex<(u16, &'static str)>>,
    }

    impl Upstream {
        async fn start(status: u16, body: &'static str) -> Upstream {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = reqwest::Url::parse(&format!(
                "http://{}/jwks.json",
                listener.local_addr().unwrap()
            ))
            .unwrap();
            let hits = Arc::new(AtomicUsize::new(0));
            let answer = Arc::new(Mutex::new((status, body)));
            let (counter, current) = (Arc::clone(&hits), Arc::clone(&answer));
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = *current.lock().unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    // Slow enough that concurrent callers overlap with the fetch.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                }
            });
            Upstream { url, hits, answer }
        }
        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
        fn answer(&self, status: u16, body: &'static str) {
            *self.answer.lock().unwrap() = (status, body);
        }
    }

    const NOW: u64 = 1_900_000_000;
    const STALENESS: u64 = 12 * 3600;

    fn cache_for(upstream: &Upstream, clock: &ManualClock) -> JwksCache {
        let issuer = IssuerConfig {
            name: "test".into(),
            issuer: "http://issuer.test".into(),
            profile: crate::config::IssuerProfile::Rfc9068,
            jwks: JwksLocation::Uri(upstream.url.clone()),
            allow_http: true,
            algorithms: JwsAlgorithm::DEFAULT_ALLOWED.to_vec(),
            token_types: vec![crate::oauth::TokenType::AccessToken],
            required: true,
            max_staleness_seconds: STALENESS,
            max_token_age_seconds: None,
            max_token_lifetime_seconds: crate::config::DEFAULT_MAX_TOKEN_LIFETIME,
            introspection: None,
            sts_audiences: None,
        };
        JwksCache::new(&issuer, reqwest::Client::new(), Clock::from(clock.clone()))
    }

    /// Polls every future concurrently on this task.
    async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
        let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
        let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
                if output.is_none() {
                    match future.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *output = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outputs.into_iter().flatten().collect()
    }

    #[test]
    fn cache_control_is_clamped() {
        assert_eq!(ttl_from_cache_control("public, max-age=300"), 300);
        assert_eq!(ttl_from_cache_control("max-age=5"), MIN_TTL);
        assert_eq!(ttl_from_cache_control("max-age=999999"), MAX_TTL);
        assert_eq!(ttl_from_cache_control("no-store"), MIN_TTL);
        assert_eq!(ttl_from_cache_control("private"), DEFAULT_TTL);
        assert_eq!(ttl_from_cache_control("max-age=abc"), DEFAULT_TTL);
    }

    /// The keeper's first fetch, then the keys requests would get.
    async fn warm(cache: &JwksCache) -> Arc<FetchedKeys> {
        cache.maintain().await;
        cache.keys().await.unwrap()
    }

    #[tokio::test]
    async fn stale_keys_are_served_up_to_the_bound_then_fail_closed() {
        let upstream = Upstream::start(200, JWKS).await;
        let clock = ManualClock::new(NOW);
        let cache = cache_for(&upstream, &clock);
        let first = warm(&cache).await;
        upstream.answer(500, "down");
        clock.advance(DEFAULT_TTL + 60); // expired: served stale, no request waits for a fetch
        assert!(Arc::ptr_eq(&cache.keys().await.unwrap(), &first));
        cache.maintain().await; // the keeper tries, fails, keeps the keys
        assert_eq!(upstream.hits(), 2);
        assert!(cache.has_usable_keys());
        clock.set(NOW + STALENESS - 1);
        assert!(Arc::ptr_eq(&cache.keys().await.unwrap(), &first));
        clock.set(NOW + STALENESS);
        assert!(!cache.has_usable_keys());
        assert!(cache.keys().await.is_none(), "too stale: fail closed");
        upstream.answer(200, JWKS);
        clock.advance(MAX_BACKOFF);
        cache.maintain().await;
        let fresh = cache.keys().await.unwrap();
        assert!(!Arc::ptr_eq(&fresh, &first));
        assert_eq!(cache.stats().failures, 1);
    }

    #[tokio::test]
    async fn requests_never_fetch_and_failures_back_off_from_the_end_of_the_attempt() {
        let upstream = Upstream::start(503, "down").await;
        let clock = ManualClock::new(NOW);
        let cache = cache_for(&upstream, &clock);
        for _ in 0..5 {
            assert!(cache.keys().await.is_none());
        }
        assert_eq!(upstream.hits(), 0, "requests do not fetch; the keeper does");
        cache.maintain().await;
        cache.maintain().await;
        assert_eq!(upstream.hits(), 1, "one attempt, then back off");
        clock.advance(1);
        cache.maintain().await;
        assert_eq!(upstream.hits(), 2);
        upstream.answer(200, JWKS);
        cache.maintain().await;
        assert_eq!(
            upstream.hits(),
            2,
            "backing off for 2 s after the second failure"
        );
        clock.advance(2);
        cache.maintain().await;
        assert!(cache.keys().await.is_some());
        assert_eq!(upstream.hits(), 3);
    }

    #[tokio::test]
    async fn a_clock_stepped_back_does_not_stretch_the_backoff() {
        let upstream = Upstream::start(503, "down").await;
        let clock = ManualClock::new(NOW);
        let cache = cache_for(&upstream, &clock);
        cache.maintain().await;
        clock.set(NOW - 3600);
        upstream.answer(200, JWKS);
        cache.maintain().await;
        assert_eq!(upstream.hits(), 2);
        assert!(cache.keys().await.is_some());
    }

    #[tokio::test]
    async fn the_keeper_refreshes_shortly_before_expiry() {
        let upstream = Upstream::start(200, JWKS).await;
        let clock = ManualClock::new(NOW);
        let cache = cache_for(&upstream, &clock);
        cache.maintain().await; // no keys yet: fetch
        assert_eq!(upstream.hits(), 1);
        clock.advance(DEFAULT_TTL - DEFAULT_TTL / 10 - 1);
        cache.maintain().await;
        assert_eq!(upstream.hits(), 1, "not due yet");
        clock.advance(1);
        cache.maintain().await;
        assert_eq!(upstream.hits(), 2, "due within a tenth of the lifetime");
        assert_eq!(cache.stats().fetched_at, Some(clock.now()));
    }

    #[tokio::test]
    async fn the_keeper_refreshes_before_the_staleness_bound_when_it_comes_first() {
        let upstream = Upstream::start(200, JWKS).await;
        let clock = ManualClock::new(NOW);
        let mut cache = cache_for(&upstream, &clock);
        cache.max_staleness = 300; // shorter than the 600 s the keys are fresh for
        cache.maintain().await;
        clock.advance(300 - 30 - 1);
        cache.maintain().await;
        assert_eq!(upstream.hits(), 1);
        clock.advance(1);
        cache.maintain().await;
        assert_eq!(
            upstream.hits(),
            2,
            "refreshed at 270 s, before the keys stop being usable"
        );
        assert!(cache.has_usable_keys());
    }

    #[tokio::test]
    async fn a_valid_jwks_without_usable_keys_is_a_failure_that_keeps_the_old_ones() {
        let upstream = Upstream::start(200, JWKS).await;
        let clock = ManualClock::new(NOW);
        let cache = cache_for(&upstream, &clock);
        let old = warm(&cache).await;
        // The issuer now publishes only a key we cannot use (P-521).
        upstream.answer(
            200,
            r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}"#,
        );
        let after = cache.refresh_for_unknown_kid(&old, |_| true).await;
        assert!(
            Arc::ptr_eq(&after.fetched, &old),
            "the last good keys are kept"
        );
        assert!(!after.confirmed);
        assert!(Arc::ptr_eq(&cache.keys().await.unwrap(), &old));
        assert_eq!(cache.stats().failures, 1, "counted as a failed fetch");
        cache.maintain().await;
        assert_eq!(upstream.hits(), 2, "backing off for 1 s");
        upstream.answer(200, JWKS);
        clock.advance(1);
        cache.maintain().await;
        assert_eq!(upstream.hits(), 3, "retried on the backoff, keys not due");
        assert!(!Arc::ptr_eq(&cache.keys().await.unwrap(), &old));
        cache.maintain().await;
        assert_eq!(
            upstream.hits(),
            3,
            "recovered: back to the refresh schedule"
        );
    }

    #[tokio::test]
    async fn failed_unknown_kid_refetch_keeps_the_last_good_keys() {
        let upstream = Upstream::start(200, JWKS).await;
        let clock = ManualClock::new(NOW);
        let cache = cache_for(&upstream, &clock);
        let old = warm(&cache).await;
        upstream.answer(500, "down");
        let after = cache.refresh_for_unknown_kid(&old, |_| true).await;
        assert!(
            Arc::ptr_eq(&after.fetched, &old),
            "the failed refetch returns the keys we had"
        );
        assert!(!after.confirmed, "not the client's fault");
        assert!(
            Arc::ptr_eq(&cache.keys().await.unwrap(), &old),
            "and they are still in use"
        );
        assert_eq!(upstream.hits(), 2);
    }

    #[tokio::test]
    async fn concurrent_unknown_kids_share_one_refetch_then_cool_down() {
        let upstream = Upstream::start(200, JWKS).await;
        let clock = ManualClock::new(NOW);
        let cache = cache_for(&upstream, &clock);
        let old = warm(&cache).await;
        clock.advance(5); // a routine fetch starts no cooldown
        let results = join_all(
            (0..8)
                .map(|_| cache.refresh_for_unknown_kid(&old, |_| true))
                .collect(),
        )
        .await;
        assert_eq!(upstream.hits(), 2, "eight callers, one fetch");
        for fresh in &results {
            assert!(Arc::ptr_eq(&fresh.fetched, &results[0].fetched));
            assert!(!Arc::ptr_eq(&fresh.fetched, &old));
        }
        assert!(results[0].confirmed, "fetched after it asked");
        assert!(
            results[1..].iter().all(|r| !r.confirmed),
            "the fetch they waited for had started before they asked"
        );
        let newest = &results[0].fetched;
        clock.advance(UNKNOWN_KID_COOLDOWN - 1);
        let again = cache.refresh_for_unknown_kid(newest, |_| true).await;
        assert!(Arc::ptr_eq(&again.fetched, newest));
        assert!(!again.confirmed, "within the cooldown: not confirmed");
        assert_eq!(upstream.hits(), 2, "no fetch within the cooldown");
        clock.advance(1);
        let after = cache.refresh_for_unknown_kid(newest, |_| true).await;
        assert_eq!(upstream.hits(), 3, "the cooldown is over");
        assert!(after.confirmed);
        let known = cache.refresh_for_unknown_kid(newest, |_| false).await;
        assert!(Arc::ptr_eq(&known.fetched, &after.fetched));
        assert_eq!(upstream.hits(), 3, "newer keys with the kid: no fetch");
    }
}
