//! Prometheus metrics (`prometheus-client`), served by the admin listener at `/metrics`
//! in OpenMetrics text. A supporting module: the exchange and the validator record into
//! it; what the upstream caches count (JWKS, introspection) is read at scrape time.
//!
//! Label values come from closed sets: OAuth error codes, the stable names of the error
//! enums (`as_str`), configured issuer names, the ids of configured clients once they
//! authenticated, and policy rule ids. No label ever carries a
//! token, a subject or anything else a caller chooses.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Counters for one issuer's JWKS, for the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksStats {
    /// Fetch attempts.
    pub fetches: u64,
    /// Failed fetch attempts.
    pub failures: u64,
    /// Keys (key, algorithm bindings) currently held.
    pub keys: usize,
    /// When the keys held were fetched (Unix seconds); `None` when there are none.
    pub fetched_at: Option<u64>,
}

/// Introspection counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntrospectionStats {
    /// Calls to the endpoint.
    pub calls: u64,
    /// Calls that failed (unavailable).
    pub failures: u64,
    /// Answers served from the cache.
    pub cache_hits: u64,
}

/// `Content-Type` of the `/metrics` response.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
    /// The authenticated client: a configured id, so a closed set; empty (Prometheus:
    /// absent) when no client authenticated.
    client_id: String,
}

/// The forward-auth endpoint's answers: the calling proxy's client id is not a label (its
/// refusals are mostly the end user's tokens, not the proxy's doing).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardAuthLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    stage: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreCallLabels {
    backend: &'static str,
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOpLabels {
    backend: &'static str,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Buckets of store call latency: 50 µs .. ~1.6 s.
fn store_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00005, 2.0, 16,
    ))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidationLabels {
    issuer: Arc<str>,
    role: &'static str,
    outcome: &'static str,
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    exchange: ExchangeMetrics,
    reloads: ReloadMetrics,
    lifecycle: LifecycleMetrics,
}

/// The metrics of token requests and of the tokens in them.
struct ExchangeMetrics {
    exchanges: Family<ResultLabel, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    grants: Family<RuleLabel, Counter>,
    duration: Histogram,
    validations: Family<ValidationLabels, Counter>,
    forward_auth: Family<ForwardAuthLabel, Counter>,
}

/// The metrics of what is reloaded while serving: policy, TLS certificate, signing keys.
struct ReloadMetrics {
    policy_reloads: Family<ReloadLabel, Counter>,
    policy_reload_failing: Gauge,
    tls_reloads: Family<ReloadLabel, Counter>,
    tls_certificate_expiry: CertificateExpiry,
    signing_key_reloads: Family<ReloadLabel, Counter>,
}

/// The metrics of the shared store and of the token lifecycle endpoints.
struct LifecycleMetrics {
    store_calls: Family<StoreCallLabels, Counter>,
    store_durations: Family<StoreOpLabels, Histogram, fn() -> Histogram>,
    rate_limited: Family<ClientLabel, Counter>,
    introspections: Family<OutcomeLabel, Counter>,
    revocations: Family<OutcomeLabel, Counter>,
}

impl ExchangeMetrics {
    fn register(registry: &mut Registry) -> Self {
        let exchanges = Family::<ResultLabel, Counter>::default();
        registry.register(
            "exchanges",
            "Token requests answered, by result (granted, or the OAuth error code) and authenticated client",
            exchanges.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "exchange_refusals",
            "Refused token requests, by the stage and the check that refused them",
            refusals.clone(),
        );
        let grants = Family::<RuleLabel, Counter>::default();
        registry.register(
            "exchange_grants",
            "Granted exchanges, by the policy rule that allowed them",
            grants.clone(),
        );
        // 100 µs .. ~3.3 s: the exchange itself is sub-millisecond, upstream waits are not.
        let duration = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0001, 2.0, 16,
        ));
        registry.register(
            "exchange_duration_seconds",
            "Time from the request's arrival to its answer on POST /token",
            duration.clone(),
        );
        let validations = Family::<ValidationLabels, Counter>::default();
        registry.register(
            "token_validations",
            "Subject and actor tokens checked, by issuer (or \"unresolved\"), role and outcome (valid, or the reason)",
            validations.clone(),
        );
        let forward_auth = Family::<ForwardAuthLabel, Counter>::default();
        registry.register(
            "forward_auth_requests",
            "Requests answered at the forward-auth endpoint, by result: granted, or the OAuth error code",
            forward_auth.clone(),
        );
        Self {
            exchanges,
            refusals,
            grants,
            duration,
            validations,
            forward_auth,
        }
    }
}

impl ReloadMetrics {
    fn register(registry: &mut Registry) -> Self {
        let policy_reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reload attempts (SIGHUP or a change of the files), by outcome: applied or failed",
            policy_reloads.clone(),
        );
        let policy_reload_failing = Gauge::default();
        registry.register(
            "policy_reload_failing",
            "1 while the policy files on disk fail to compile and the previous policy stays in force",
            policy_reload_failing.clone(),
        );
        let tls_reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "tls_reloads",
            "Reloads of the public listener's TLS certificate and key (SIGHUP or a change of the files), by outcome: applied or failed (the previous certificate stays in force)",
            tls_reloads.clone(),
        );
        let tls_certificate_expiry = CertificateExpiry::default();
        registry.register_collector(Box::new(tls_certificate_expiry.clone()));
        let signing_key_reloads = Family::<ReloadLabel, Counter>::default();
        registry.register(
            "signing_key_reloads",
            "Reloads of the signing key directory (SIGHUP or a change of its files), by outcome: applied or failed (the previous keys stay in force)",
            signing_key_reloads.clone(),
        );
        Self {
            policy_reloads,
            policy_reload_failing,
            tls_reloads,
            tls_certificate_expiry,
            signing_key_reloads,
        }
    }
}

impl LifecycleMetrics {
    fn register(registry: &mut Registry) -> Self {
        let store_calls = Family::<StoreCallLabels, Counter>::default();
        registry.register(
            "store_calls",
            "Calls to the shared store, by backend (memory, redis), operation and outcome (ok, or the error: unavailable, timeout, full, ...)",
            store_calls.clone(),
        );
        let store_durations =
            Family::<StoreOpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                store_histogram,
            );
        registry.register(
            "store_call_duration_seconds",
            "Time of a call to the shared store, by backend and operation (buckets 50 µs … 1.6 s)",
            store_durations.clone(),
        );
        let rate_limited = Family::<ClientLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests answered 429 because the client was over its policy's rate_limit, by client",
            rate_limited.clone(),
        );
        let introspections = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "introspections",
            "POST /introspect answers, by outcome: active, inactive, or the refusal (unauthenticated, not_allowed, unavailable, rate_limited)",
            introspections.clone(),
        );
        let revocations = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "revocations",
            "Revocations recorded, by how: token (POST /revoke), ignored (POST /revoke of a token that was not live), admin_subject, admin_upstream_token, admin_chain_root",
            revocations.clone(),
        );
        Self {
            store_calls,
            store_durations,
            rate_limited,
            introspections,
            revocations,
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every live metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gleipnir");
        Self {
            exchange: ExchangeMetrics::register(&mut registry),
            reloads: ReloadMetrics::register(&mut registry),
            lifecycle: LifecycleMetrics::register(&mut registry),
            registry,
        }
    }

    /// A token request answered: `result` is `granted` or the OAuth error code,
    /// `client_id` the authenticated client's (a configured id), `None` when none
    /// authenticated.
    pub fn exchange(&self, result: &'static str, client_id: Option<String>, seconds: f64) {
        let client_id = client_id.unwrap_or_default();
        self.exchange
            .exchanges
            .get_or_create(&ResultLabel { result, client_id })
            .inc();
        self.exchange.duration.observe(seconds);
    }

    /// A forward-auth request answered: `result` is `granted` or the OAuth error code.
    pub fn forward_auth(&self, result: &'static str) {
        self.exchange
            .forward_auth
            .get_or_create(&ForwardAuthLabel { result })
            .inc();
    }

    /// A refusal, by stage and reason (`ExchangeError::stage`/`reason`).
    pub fn refusal(&self, stage: &'static str, reason: &'static str) {
        self.exchange
            .refusals
            .get_or_create(&RefusalLabels { stage, reason })
            .inc();
    }

    /// A grant, by the policy rule that allowed it.
    pub fn grant(&self, rule: &Arc<str>) {
        self.exchange
            .grants
            .get_or_create(&RuleLabel {
                rule: Arc::clone(rule),
            })
            .inc();
    }

    /// A policy reload attempt: applied, or failed (the previous policy stays in force).
    pub fn policy_reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "failed" };
        self.reloads
            .policy_reloads
            .get_or_create(&ReloadLabel { outcome })
            .inc();
        self.reloads.policy_reload_failing.set(i64::from(!applied));
    }

    /// A TLS certificate reload attempt: applied, or failed (the previous certificate
    /// stays in force).
    pub fn tls_reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "failed" };
        self.reloads
            .tls_reloads
            .get_or_create(&ReloadLabel { outcome })
            .inc();
    }

    /// The not-after time (Unix seconds) of the TLS certificate now in force. Until this
    /// is called (a plain-HTTP listener), the gauge is absent rather than 0.
    pub fn tls_certificate_expiry(&self, not_after: i64) {
        *self
            .reloads
            .tls_certificate_expiry
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(not_after);
    }

    /// A signing key directory reload: applied, or failed (the previous keys stay).
    pub fn signing_keys_reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "failed" };
        self.reloads
            .signing_key_reloads
            .get_or_create(&ReloadLabel { outcome })
            .inc();
    }

    /// A token checked: `issuer` as configured (or `unresolved`), `role` subject/actor,
    /// `outcome` `valid` or the refusal reason.
    pub fn validation(&self, issuer: &Arc<str>, role: &'static str, outcome: &'static str) {
        self.exchange
            .validations
            .get_or_create(&ValidationLabels {
                issuer: Arc::clone(issuer),
                role,
                outcome,
            })
            .inc();
    }

    /// A call to the shared store: its backend, operation, outcome and duration.
    pub fn store_call(
        &self,
        backend: &'static str,
        op: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        self.lifecycle
            .store_calls
            .get_or_create(&StoreCallLabels {
                backend,
                op,
                outcome,
            })
            .inc();
        self.lifecycle
            .store_durations
            .get_or_create(&StoreOpLabels { backend, op })
            .observe(seconds);
    }

    /// A request refused with 429 for `client`'s rate limit.
    pub fn rate_limited(&self, client: &Arc<str>) {
        self.lifecycle
            .rate_limited
            .get_or_create(&ClientLabel {
                client: Arc::clone(client),
            })
            .inc();
    }

    /// A `POST /introspect` answered with `outcome`.
    pub fn introspection(&self, outcome: &'static str) {
        self.lifecycle
            .introspections
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// A revocation recorded, by how it was asked for.
    pub fn revocation(&self, outcome: &'static str) {
        self.lifecycle
            .revocations
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The OpenMetrics text of everything: the live metrics and `snapshot`'s.
    pub fn encode(&self, snapshot: Snapshot) -> String {
        let mut text = String::new();
        let mut scrape = Registry::with_prefix("gleipnir");
        scrape.register_collector(Box::new(snapshot));
        // Writing to a String cannot fail; an encoding error would only lose metrics.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &scrape);
        let _ = prometheus_client::encoding::text::encode_eof(&mut text);
        text
    }
}

/// What is read at scrape time: readiness, the signing key, and the upstream caches'
/// counters.
#[derive(Debug)]
pub struct Snapshot {
    /// `/readyz` would answer 200.
    pub ready: bool,
    /// The signing key's `kid` and algorithm.
    pub signing_key: (String, &'static str),
    /// When the signing key was loaded or, in a key ring, started signing (Unix seconds).
    pub signing_key_loaded_at: u64,
    /// Keys in our JWKS now.
    pub signing_keys_published: usize,
    /// Per issuer name.
    pub jwks: Vec<(String, JwksStats)>,
    /// Per issuer name.
    pub introspection: Vec<(String, IntrospectionStats)>,
    /// Log lines dropped per stream (`audit`, `service`) because its reader stalled.
    pub log_dropped: [(&'static str, u64); 2],
    /// The re-issue cache's counters and sizes; `None` when it is off.
    pub reissue_cache: Option<crate::egress::cache::CacheStats>,
    /// The in-process store's live entries and capacity (it holds the `private_key_jwt`
    /// replay cache); `None` for a backend that cannot tell cheaply.
    pub store: Option<(usize, usize)>,
    /// Trace export counters; `None` when traces are off.
    pub traces: Option<crate::telemetry::otlp::TraceStats>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_signing(&mut encoder)?;
        self.encode_jwks(&mut encoder)?;
        self.encode_introspection(&mut encoder)?;
        self.encode_store(&mut encoder)?;
        self.encode_log_dropped(&mut encoder)?;
        self.encode_reissue_cache(&mut encoder)?;
        self.encode_traces(&mut encoder)
    }
}

impl Snapshot {
    /// The store's size: the replay cache of `private_key_jwt` assertions lives in it.
    fn encode_store(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((entries, capacity)) = self.store else {
            return Ok(());
        };
        gauge(
            encoder,
            "store_entries",
            "Live entries in the in-process store (the private_key_jwt replay cache: one per jti until the assertion expires)",
            i64::try_from(entries).unwrap_or(i64::MAX),
        )?;
        gauge(
            encoder,
            "store_capacity",
            "Most live entries the in-process store holds; when full, private_key_jwt assertions are refused (503)",
            i64::try_from(capacity).unwrap_or(i64::MAX),
        )
    }

    /// Readiness and the signing keys.
    fn encode_signing(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            encoder,
            "ready",
            "1 when every required issuer has usable keys",
            i64::from(self.ready),
        )?;
        gauge(
            encoder,
            "signing_key_loaded_timestamp_seconds",
            "When the signing key in use was loaded or, with a key directory, started signing (Unix seconds)",
            i64::try_from(self.signing_key_loaded_at).unwrap_or(i64::MAX),
        )?;
        gauge(
            encoder,
            "signing_keys_published",
            "Keys in the published JWKS (upcoming, signing, and retired ones whose tokens may still be valid)",
            i64::try_from(self.signing_keys_published).unwrap_or(i64::MAX),
        )?;
        let labels = [
            ("kid", self.signing_key.0.as_str()),
            ("alg", self.signing_key.1),
        ];
        info(
            encoder,
            "signing_key_info",
            "The signing key in use",
            &labels,
        )?;
        info(
            encoder,
            "build_info",
            "The running build of gleipnir",
            &[("version", env!("CARGO_PKG_VERSION"))],
        )
    }

    /// Per issuer: the JWKS fetches and the keys they yielded.
    fn encode_jwks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let jwks = self.jwks.as_slice();
        per_issuer(
            encoder,
            "jwks_fetches",
            "JWKS fetch attempts",
            MetricType::Counter,
            jwks,
            |s| Some(s.fetches),
        )?;
        per_issuer(
            encoder,
            "jwks_fetch_failures",
            "Failed JWKS fetch attempts",
            MetricType::Counter,
            jwks,
            |s| Some(s.failures),
        )?;
        per_issuer(
            encoder,
            "jwks_keys",
            "Usable (key, algorithm) pairs held",
            MetricType::Gauge,
            jwks,
            |s| u64::try_from(s.keys).ok(),
        )?;
        per_issuer(
            encoder,
            "jwks_fetched_timestamp_seconds",
            "When the keys held were fetched (Unix seconds)",
            MetricType::Gauge,
            jwks,
            |s| s.fetched_at,
        )
    }

    /// The re-issue cache: lookups by result, entries and their bytes (absent when off).
    fn encode_reissue_cache(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.reissue_cache else {
            return Ok(());
        };
        let mut metric = encoder.encode_descriptor(
            "reissue_cache_lookups",
            "Re-issue cache lookups, by result: hit (answered with an earlier grant) or miss",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [("hit", stats.hits), ("miss", stats.misses)] {
            ConstCounter::new(n).encode(metric.encode_family(&[("result", result)])?)?;
        }
        gauge(
            encoder,
            "reissue_cache_entries",
            "Grants held by the re-issue cache (approximate)",
            i64::try_from(stats.entries).unwrap_or(i64::MAX),
        )?;
        gauge(
            encoder,
            "reissue_cache_bytes",
            "Estimated bytes of the grants held by the re-issue cache (approximate)",
            i64::try_from(stats.bytes).unwrap_or(i64::MAX),
        )
    }

    /// Per stream: the lines a stalled reader cost.
    fn encode_log_dropped(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "log_records_dropped",
            "Log lines dropped because the stream's reader stalled (audit: refusals only)",
            None,
            MetricType::Counter,
        )?;
        for (stream, dropped) in self.log_dropped {
            ConstCounter::new(dropped).encode(metric.encode_family(&[("stream", stream)])?)?;
        }
        Ok(())
    }

    /// Trace export, when configured: what was exported and what was lost.
    fn encode_traces(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(traces) = self.traces else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "trace_spans_exported",
                "Spans the OTLP collector accepted",
                traces.exported,
            ),
            (
                "trace_spans_dropped",
                "Spans dropped because the trace export queue was full",
                traces.dropped,
            ),
            (
                "trace_export_failures",
                "Trace export requests that failed (their spans are lost)",
                traces.failed_exports,
            ),
        ] {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }

    /// Per issuer: the introspection calls.
    fn encode_introspection(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let introspection = self.introspection.as_slice();
        per_issuer(
            encoder,
            "introspection_calls",
            "Calls to the introspection endpoint",
            MetricType::Counter,
            introspection,
            |s| Some(s.calls),
        )?;
        per_issuer(
            encoder,
            "introspection_failures",
            "Introspection calls that failed (endpoint unavailable)",
            MetricType::Counter,
            introspection,
            |s| Some(s.failures),
        )?;
        per_issuer(
            encoder,
            "introspection_cache_hits",
            "Introspection answers reused from the cache",
            MetricType::Counter,
            introspection,
            |s| Some(s.cache_hits),
        )
    }
}

/// An info metric: a gauge of value 1 whose labels carry the information (the Prometheus
/// `_info` convention).
fn info(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(1i64).encode(metric.encode_family(&labels)?)
}

/// One unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// One metric with a sample per issuer; issuers for which `value` is `None` are left out.
fn per_issuer<S>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(String, S)],
    value: impl Fn(&S) -> Option<u64>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (issuer, stats) in rows {
        let Some(v) = value(stats) else { continue };
        let labels = [("issuer", issuer.as_str())];
        let family = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(family)?,
            _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(family)?,
        }
    }
    Ok(())
}

/// `gleipnir_tls_certificate_expiry_timestamp_seconds`: present only once a certificate is
/// in force, so a plain-HTTP listener shows no expiry at all rather than 1970.
#[derive(Debug, Default, Clone)]
struct CertificateExpiry(Arc<std::sync::Mutex<Option<i64>>>);

impl Collector for CertificateExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let not_after = *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(not_after) = not_after else {
            return Ok(());
        };
        ConstGauge::new(not_after).encode(encoder.encode_descriptor(
            "tls_certificate_expiry_timestamp_seconds",
            "Not-after time of the leaf certificate in force on the public listener (Unix seconds)",
            None,
            MetricType::Gauge,
        )?)
    }
}
