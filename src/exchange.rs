//! The one place where the stages meet, in order: client authentication → the client's
//! rate limit → request parameters → policy admission → subject (and actor) token
//! validation → policy decision → the re-exchanged token's lineage → minting → the new
//! token's lineage. Each step's output type proves the step before it.
//!
//! Between admission and token validation, a real exchange asks the re-issue cache
//! ([`crate::egress::cache`]) for an earlier grant of the same inputs under the same policy
//! and signing key; a hit skips validation, decision and minting, nothing before them, and
//! is handed out only while the lineage of its token is clean. The request comes from
//! `POST /token`'s form, or from a gateway's forward-auth request
//! ([`crate::egress::forward_auth`]); either way the same steps decide it.
//!
//! The lineage steps (`lifecycle`) run for a real exchange only: a re-exchanged gleipnir
//! token must have a clean lineage (nothing it derives from revoked, its root upstream
//! token still active where that issuer introspects), and an issued token is handed out
//! only once its lineage is recorded, so that revoking anything it derives from reaches
//! it. A dry run touches neither the store nor the rate limit.
//!
//! Each stage runs in its own span (`client_authentication`, `request_parsing`,
//! `admission`, `subject_validation`, `actor_validation`, `decision`, `minting`), a child
//! of the request's span, with `error.type` the refusal reason when it refused; the
//! request's span gets the client, the decision and the refusal. They are exported as
//! traces only with `[telemetry.otlp]` (see `telemetry`); otherwise they are disabled.

pub mod dry_run;

use std::borrow::Borrow;
use std::sync::Arc;

use crate::audit::{AuditRecord, GrantRecord, RefusalLog};
use crate::client_auth::{AuthenticatedClient, ClientAuthenticator, ClientRequest};
use crate::clock::Clock;
use crate::config::IssuerId;
use crate::egress::cache::{CacheKey, Entry, Inputs, ReissueCache};
use crate::error::ExchangeError;
use crate::lifecycle::{Lifecycle, LifecycleError, Lineage, Provenance};
use crate::metrics::Metrics;
use crate::mint::{IssuedToken, Minter};
use crate::oauth::form::FormBody;
use crate::policy::{Admission, Decided, PolicyEngine, PolicyStore, Proofs, Targets, Verified};
use crate::ratelimit::RateLimiter;
use crate::request::{PresentedToken, TokenExchangeRequest};
use crate::token::{Actor, Role, Subject, TokenError, TokenValidator, VerifiedToken};
use tracing::Instrument as _;

/// The token-exchange pipeline.
pub struct Exchanger {
    metrics: Arc<Metrics>,
    clients: ClientAuthenticator,
    validator: TokenValidator,
    policy: Arc<PolicyStore>,
    minter: Minter,
    clock: Clock,
    refusals: Arc<RefusalLog>,
    reissue: Option<ReissueCache>,
    lifecycle: Arc<Lifecycle>,
    limiter: RateLimiter,
}

/// What the pipeline uses beside its stages: the audit's refusal log, lineage and
/// revocation, and the rate limiter.
pub struct Support {
    /// How the audit stream aggregates repeated refusals.
    pub refusals: Arc<RefusalLog>,
    /// Lineage records and revocation markers.
    pub lifecycle: Arc<Lifecycle>,
    /// Per-client rate limits.
    pub limiter: RateLimiter,
}

impl Exchanger {
    /// Assembles the pipeline from its stages.
    pub fn new(
        clients: ClientAuthenticator,
        validator: TokenValidator,
        policy: Arc<PolicyStore>,
        minter: Minter,
        clock: Clock,
        metrics: Arc<Metrics>,
        support: Support,
    ) -> Self {
        Self {
            metrics,
            clients,
            validator,
            policy,
            minter,
            clock,
            reissue: None,
            refusals: support.refusals,
            lifecycle: support.lifecycle,
            limiter: support.limiter,
        }
    }

    /// Lineage and revocation.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The policy in force (rate limits of the lifecycle endpoints).
    pub fn policy(&self) -> &PolicyStore {
        &self.policy
    }

    /// Admits one request of `client` under its policy's rate limit, if it has one.
    pub async fn rate_limit(&self, client: &str) -> Result<(), crate::ratelimit::RateLimited> {
        let limit = self.policy.current().rate_limit(client);
        match limit {
            Some((client, limit)) => self.limiter.check(&client, limit).await,
            None => Ok(()),
        }
    }

    /// Whether our token `jti` and everything it derives from is still good: its lineage
    /// ([`Lifecycle::check`]) and, when its root upstream token came from an issuer that
    /// introspects, that issuer's current answer about it.
    pub async fn lineage_clean(&self, jti: &str) -> Result<Option<Lineage>, LifecycleError> {
        let lineage = self.lifecycle.check(jti).await?;
        if let Some((issuer, token)) = lineage
            .as_ref()
            .and_then(|l| self.lifecycle.unseal_upstream(l))
        {
            use crate::token::TokenError;
            match self.validator.still_active(&issuer, &token).await {
                Ok(()) => {}
                Err(TokenError::IntrospectionUnavailable) => {
                    return Err(LifecycleError::UpstreamUnavailable);
                }
                Err(_) => return Err(LifecycleError::UpstreamInactive),
            }
        }
        Ok(lineage)
    }

    /// How the audit stream aggregates repeated refusals.
    pub fn refusals(&self) -> &RefusalLog {
        &self.refusals
    }

    /// Now, on the service's clock.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The token validator (readiness, warm-up).
    pub fn validator(&self) -> &TokenValidator {
        &self.validator
    }

    /// Puts the re-issue cache in the pipeline (`None`: switched off).
    pub fn with_reissue_cache(mut self, cache: Option<ReissueCache>) -> Self {
        self.reissue = cache;
        self
    }

    /// The re-issue cache, when it is on (metrics).
    pub fn reissue_cache(&self) -> Option<&ReissueCache> {
        self.reissue.as_ref()
    }

    /// The client authenticator (metrics, and endpoints that authenticate clients).
    pub fn clients(&self) -> &ClientAuthenticator {
        &self.clients
    }

    /// Runs one exchange of `POST /token` and writes its audit record.
    pub async fn exchange(&self, request_id: &str, request: &ClientRequest<'_>) -> Exchanged {
        let read = |form: &FormBody| Ok(TokenExchangeRequest::from_form(form)?);
        self.serve(request_id, request, read).await
    }

    /// Runs the exchange a gateway asks for at the forward-auth endpoint
    /// (`egress::forward_auth`) and writes its audit record: the proxy authenticates with
    /// `credentials` (its `Authorization`-syntax header, or its connection's certificate)
    /// through the same dispatch as at `/token`, and only then is `request` read from the
    /// original request.
    pub async fn exchange_for_proxy(
        &self,
        request_id: &str,
        credentials: &ClientRequest<'_>,
        request: impl FnOnce() -> Result<TokenExchangeRequest, ExchangeError>,
    ) -> Result<IssuedToken, ExchangeError> {
        let read = |_: &FormBody| request();
        self.serve(request_id, credentials, read).await.result
    }

    /// One exchange, granted from the pipeline or the re-issue cache or refused, with its
    /// audit record and metrics.
    async fn serve(
        &self,
        request_id: &str,
        request: &ClientRequest<'_>,
        read: impl FnOnce(&FormBody) -> Result<TokenExchangeRequest, ExchangeError>,
    ) -> Exchanged {
        let mut audit = AuditRecord {
            peer: request.peer,
            ..AuditRecord::default()
        };
        let mode = Exchange { request: *request };
        let granted = self.grant(&mode, request.form, read, &mut audit).await;
        note_in_request_span(&audit, granted.as_ref().err());
        let result = match granted {
            Ok(Granted::Cached(entry)) => {
                audit.granted(request_id, entry.record(), true).await;
                self.metrics.grant(&entry.record().rule);
                Ok(entry.issued(self.clock.now()))
            }
            Ok(Granted::Minted {
                issued,
                record,
                reuse,
            }) => {
                audit.granted(request_id, &record, false).await;
                self.metrics.grant(&record.rule);
                // Kept once its record is written: a grant whose record never was (the
                // request timed out waiting for the audit stream) is not answered later.
                if let Some((key, iat, proven_until)) = reuse
                    && let Some(cache) = &self.reissue
                {
                    cache.insert(key, &issued, iat, proven_until, record).await;
                }
                Ok(issued)
            }
            Err(error) => {
                self.metrics.refusal(error.stage(), error.reason());
                audit.refused(request_id, &error, &self.refusals);
                Err(error)
            }
        };
        Exchanged {
            client_id: audit.client_id,
            result,
        }
    }

    /// A real exchange: the client authenticated and within its rate limit, the request
    /// read, the policy's admission, then an earlier grant for the same inputs (the
    /// re-issue cache), or the tokens validated, the decision and a new token with its
    /// lineage recorded.
    async fn grant(
        &self,
        mode: &Exchange<'_>,
        form: &FormBody,
        read: impl FnOnce(&FormBody) -> Result<TokenExchangeRequest, ExchangeError>,
        audit: &mut AuditRecord,
    ) -> Result<Granted, ExchangeError> {
        let client = async_stage(
            "client_authentication",
            mode.client(&self.clients, form, audit),
        )
        .await?;
        // Then its rate limit, before any token costs a signature check: a cache hit
        // counts like any other exchange.
        self.rate_limit(client.id())
            .await
            .map_err(|limited| ExchangeError::RateLimited(limited.retry_after))?;
        let request = stage("request_parsing", || read(form))?;
        let policy = self.policy.current();
        let admission = stage("admission", || {
            admit::<Verified>(&policy, &client, &request, audit)
        })?;
        let cache_key = match (&self.reissue, admission.reissue_cache()) {
            (Some(cache), true) => match self.cached(cache, &client, &request, &policy).await? {
                Lookup::Hit(entry) => return Ok(Granted::Cached(entry)),
                Lookup::Miss(key) => key,
            },
            _ => None,
        };
        let mut provenance = Provenance::default();
        let (grant, proven) = self
            .decide(mode, &admission, &request, audit, &mut provenance)
            .await?;
        // Minting includes what a token needs before it leaves: its parent's lineage
        // checked, its own recorded.
        let issued = async_stage("minting", self.issue(&grant, &provenance)).await?;
        let record = audit.grant_record(&grant, &issued);
        Ok(Granted::Minted {
            reuse: cache_key.map(|key| (key, grant.iat(), proven)),
            issued,
            record,
        })
    }

    /// The re-issue cache's earlier grant for these inputs, if it may be handed out now:
    /// the keys that vouched for its tokens still usable (past an issuer's staleness
    /// bound its tokens fail closed, reused or not) and nothing in its token's lineage
    /// revoked (the revocation hook of `egress::cache`). Otherwise the key to keep the new
    /// grant under (`None`: no signing key now, nothing to key on).
    async fn cached(
        &self,
        cache: &ReissueCache,
        client: &AuthenticatedClient,
        request: &TokenExchangeRequest,
        policy: &PolicyEngine,
    ) -> Result<Lookup, ExchangeError> {
        let now = self.clock.now();
        let ring = self.minter.keys().current();
        let Some(signer) = ring.signer(now) else {
            return Ok(Lookup::Miss(None));
        };
        let key = cache.key(&Inputs {
            client,
            request,
            policy_generation: policy.generation(),
            signing_kid: signer.key().kid(),
        });
        let Some(entry) = cache.get(&key, now).await else {
            return Ok(Lookup::Miss(Some(key)));
        };
        let usable = entry
            .keys()
            .iter()
            .flatten()
            .all(|i| self.validator.keys_usable(*i));
        if !usable {
            return Ok(Lookup::Miss(Some(key)));
        }
        match self.lineage_clean(&entry.record().jti).await {
            Ok(Some(_)) => Ok(Lookup::Hit(entry)),
            // Revoked (or its lineage gone): never handed out again; the exchange runs
            // anew and meets the revocation itself.
            Ok(None)
            | Err(
                LifecycleError::Unknown
                | LifecycleError::Revoked
                | LifecycleError::UpstreamInactive,
            ) => {
                cache.revoked(&key).await;
                Ok(Lookup::Miss(Some(key)))
            }
            Err(e @ (LifecycleError::UpstreamUnavailable | LifecycleError::Unavailable(_))) => {
                Err(ExchangeError::Lifecycle(e))
            }
        }
    }

    /// After the decision: the re-exchanged token's lineage checked, the token minted, its
    /// own lineage recorded (only then is it handed out).
    async fn issue(
        &self,
        grant: &crate::policy::Grant,
        provenance: &Provenance,
    ) -> Result<IssuedToken, ExchangeError> {
        let parent = match &provenance.parent {
            Some(jti) => self
                .lineage_clean(jti)
                .await
                .map_err(ExchangeError::Lifecycle)?,
            None => None,
        };
        let issued = self.minter.mint(grant).map_err(ExchangeError::Mint)?;
        self.lifecycle
            .record(
                &issued.jti,
                (grant.iat(), grant.exp()),
                parent.as_ref(),
                provenance,
            )
            .await
            .map_err(ExchangeError::Lifecycle)?;
        Ok(issued)
    }

    /// The pipeline up to the decision (for an operator's dry run): the client, the
    /// request, admission, the tokens, the decision. No rate limit, no store.
    async fn run<M: Mode>(
        &self,
        mode: &M,
        form: &FormBody,
        audit: &mut AuditRecord,
    ) -> Result<Decided<M::Proofs>, ExchangeError> {
        // Who is asking comes first: an unauthenticated caller learns nothing about the
        // request beyond 401 and costs no more than a form decode.
        let client = mode.client(&self.clients, form, audit).await?;
        let request = TokenExchangeRequest::from_form(form)?;
        let policy = self.policy.current();
        let admission = admit::<M::Proofs>(&policy, &client, &request, audit)?;
        let mut provenance = Provenance::default();
        let (decided, _) = self
            .decide(mode, &admission, &request, audit, &mut provenance)
            .await?;
        Ok(decided)
    }

    /// From an admitted request to the decision, written once for every [`Mode`]: the
    /// mode obtains the tokens' proofs, and the decision's type follows from them (only a
    /// real exchange's is a [`Grant`](crate::policy::Grant)). Also returns until when the
    /// tokens' checks hold ([`Checked::proven_until`](crate::token::Checked::proven_until)).
    async fn decide<M: Mode>(
        &self,
        mode: &M,
        admission: &Admission<'_, M::Proofs>,
        request: &TokenExchangeRequest,
        audit: &mut AuditRecord,
        provenance: &mut Provenance,
    ) -> Result<(Decided<M::Proofs>, Proven), ExchangeError> {
        let subject = traced_stage(
            "subject_validation",
            mode.token::<Subject>(
                &self.validator,
                &request.subject,
                admission.subject_issuers(),
            ),
        )
        .await
        .map_err(ExchangeError::Subject)?;
        audit.subject_token(subject.borrow());
        let mut proven = Proven {
            until: subject.borrow().proven_until(),
            by_keys: [subject.borrow().keys_of(), None],
        };
        note_subject(
            provenance,
            subject.borrow(),
            &request.subject.token,
            &self.validator,
        );
        let actor = match &request.actor {
            Some(presented) => {
                let accepted = admission.actor_issuers(subject.borrow().issuer());
                let actor = traced_stage(
                    "actor_validation",
                    mode.token::<Actor>(&self.validator, presented, accepted),
                )
                .await
                .map_err(ExchangeError::Actor)?;
                audit.actor_token(actor.borrow());
                proven.until = proven.until.min(actor.borrow().proven_until());
                proven.by_keys[1] = actor.borrow().keys_of();
                let checked: &crate::token::Checked<Actor> = actor.borrow();
                provenance.upstream(
                    checked.iss(),
                    checked.jti(),
                    &presented.token,
                    checked.sub(),
                );
                Some(actor)
            }
            None => None,
        };
        let targets = Targets {
            audiences: &request.audiences,
            resources: &request.resources,
            scope: request.scope.as_deref(),
            requested_token_type: request.requested_token_type,
        };
        let decided = stage("decision", || {
            admission
                .decide(&subject, actor.as_ref(), targets, self.clock.now())
                .map_err(|r| audit.refused_by(r))
        })?;
        Ok((decided, proven))
    }
}

/// The span of one stage, a child of the current (the request's) span.
fn stage_span(name: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: crate::telemetry::SPAN_TARGET,
        "stage",
        otel.name = name,
        error.type = tracing::field::Empty,
    )
}

/// Runs a synchronous stage in its span, noting there why it refused.
fn stage<T>(
    name: &'static str,
    run: impl FnOnce() -> Result<T, ExchangeError>,
) -> Result<T, ExchangeError> {
    let span = stage_span(name);
    let result = span.in_scope(run);
    if let Err(e) = &result {
        span.record("error.type", e.reason());
    }
    result
}

/// Runs an asynchronous stage in its span (its upstream calls are the span's children),
/// noting there why it refused.
fn async_stage<T, F>(name: &'static str, run: F) -> Staged<F, ExchangeError>
where
    F: Future<Output = Result<T, ExchangeError>>,
{
    Staged {
        run: run.instrument(stage_span(name)),
        reason: ExchangeError::reason,
    }
}

/// Runs a token validation in its span (its upstream calls are the span's children),
/// noting there why it refused.
fn traced_stage<T, F>(name: &'static str, run: F) -> Staged<F, TokenError>
where
    F: Future<Output = Result<T, TokenError>>,
{
    Staged {
        run: run.instrument(stage_span(name)),
        reason: |e| e.as_str(),
    }
}

pin_project_lite::pin_project! {
    /// An asynchronous stage: its future in the stage's span, and how a refusal is named
    /// there. A future of its own rather than an `async fn`, whose state would hold the
    /// stage's future twice (as its argument and as the instrumented future it awaits):
    /// the request's whole state is moved as a value on its way into the runtime, so
    /// its size is copied on every request.
    struct Staged<F, E> {
        #[pin]
        run: tracing::instrument::Instrumented<F>,
        reason: fn(&E) -> &'static str,
    }
}

impl<T, E, F: Future<Output = Result<T, E>>> Future for Staged<F, E> {
    type Output = Result<T, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        let result = std::task::ready!(this.run.as_mut().poll(cx));
        if let Err(e) = &result {
            this.run.span().record("error.type", (this.reason)(e));
        }
        std::task::Poll::Ready(result)
    }
}

/// Records the client and the outcome in the request's span (the current one), when
/// spans are recorded at all.
fn note_in_request_span(audit: &AuditRecord, error: Option<&ExchangeError>) {
    if !tracing::enabled!(target: crate::telemetry::SPAN_TARGET, tracing::Level::INFO) {
        return;
    }
    let request = tracing::Span::current();
    request.record("gleipnir.client_id", audit.client_id.as_deref());
    match error {
        None => request.record("gleipnir.decision", "granted"),
        Some(e) => request
            .record("gleipnir.decision", "refused")
            .record("gleipnir.refusal.stage", e.stage())
            .record("gleipnir.refusal.reason", e.reason()),
    };
}

/// What a decision's tokens prove beyond it, for reusing it: until when their checks
/// hold, and which issuers' keys vouched for them (subject, actor).
#[derive(Debug, Clone, Copy)]
pub struct Proven {
    /// The earliest [`Checked::proven_until`](crate::token::Checked::proven_until).
    pub until: u64,
    /// The issuers whose keys vouched for the subject and actor tokens (`None`: no actor
    /// token, or one vouched for by introspection).
    pub by_keys: [Option<crate::config::IssuerId>; 2],
}

/// What the re-issue cache has for a request.
enum Lookup {
    /// An earlier grant that may be handed out now.
    Hit(Arc<Entry>),
    /// None: the key to keep the new grant under, if there is one.
    Miss(Option<CacheKey>),
}

/// What a real exchange granted. Made once per request and moved once: the size of the
/// larger variant costs less than boxing it would.
#[allow(clippy::large_enum_variant)]
enum Granted {
    /// An earlier grant for the same inputs, from the re-issue cache.
    Cached(Arc<Entry>),
    /// A new token, with its audit record's facts, and what the cache needs to keep it
    /// (its key, the grant's `iat`, until when its inputs' checks hold) when it may.
    Minted {
        issued: IssuedToken,
        record: GrantRecord,
        reuse: Option<(CacheKey, u64, Proven)>,
    },
}

/// The checks that need no token, under the policy in force when the request arrived
/// (which decides it to the end, whatever a reload does meanwhile).
fn admit<'p, P: Proofs>(
    policy: &'p PolicyEngine,
    client: &'p P::Client,
    request: &TokenExchangeRequest,
    audit: &mut AuditRecord,
) -> Result<Admission<'p, P>, ExchangeError> {
    audit.targets = Some((request.audiences.clone(), request.resources.clone()));
    let actor_type = request.actor.as_ref().map(|a| a.token_type);
    policy
        .admit::<P>(client, request.subject.token_type, actor_type)
        .map_err(|r| audit.refused_by(r))
}

/// Notes where the subject token comes from: our own token (its lineage is the parent's),
/// or an upstream one (named by its identifiers, kept sealed when its issuer introspects).
fn note_subject(
    provenance: &mut Provenance,
    subject: &crate::token::Checked<Subject>,
    token: &str,
    validator: &TokenValidator,
) {
    if subject.issuer() == IssuerId::SELF {
        // Our tokens always carry a jti; one without is unknown to the lineage check.
        provenance.parent = Some(subject.jti().unwrap_or_default().to_owned());
        return;
    }
    provenance.upstream(subject.iss(), subject.jti(), token, subject.sub());
    if let Some(name) = validator.introspects(subject.issuer()) {
        provenance.recheck = Some((name.to_owned(), zeroize::Zeroizing::new(token.to_owned())));
    }
}

/// How the pipeline obtains its proofs. [`Exchange`] authenticates the client and
/// verifies the tokens; a dry run ([`dry_run`]) names the client and checks the tokens,
/// with or without their signatures. Nothing else differs between the two.
trait Mode {
    /// The proofs this mode holds.
    type Proofs: Proofs;

    /// The client, proven as this mode proves it (noted in the audit record).
    fn client(
        &self,
        clients: &ClientAuthenticator,
        form: &FormBody,
        audit: &mut AuditRecord,
    ) -> impl Future<Output = Result<<Self::Proofs as Proofs>::Client, ExchangeError>> + Send;

    /// A presented token of role `R`, proven as this mode proves it.
    fn token<R: Role>(
        &self,
        validator: &TokenValidator,
        presented: &PresentedToken,
        accepted: &[IssuerId],
    ) -> impl Future<Output = Result<<Self::Proofs as Proofs>::Token<R>, TokenError>> + Send;
}

/// What [`Exchanger::exchange`] came to.
#[derive(Debug)]
pub struct Exchanged {
    /// The client that authenticated (a configured id, so a bounded metric label); `None`
    /// when none did.
    pub client_id: Option<String>,
    /// The issued token, or why none was.
    pub result: Result<IssuedToken, ExchangeError>,
}

/// A real exchange: the request's credentials, the tokens' signatures.
struct Exchange<'a> {
    /// What the request carries that can authenticate its client.
    request: ClientRequest<'a>,
}

impl Mode for Exchange<'_> {
    type Proofs = Verified;

    async fn client(
        &self,
        clients: &ClientAuthenticator,
        _: &FormBody,
        audit: &mut AuditRecord,
    ) -> Result<AuthenticatedClient, ExchangeError> {
        let client = clients.authenticate(&self.request).await?;
        audit.client_id = Some(client.id().to_owned());
        audit.auth_method = Some(client.method().as_str());
        audit.client_identity = client.client().workload_identity().map(str::to_owned);
        Ok(client)
    }

    async fn token<R: Role>(
        &self,
        validator: &TokenValidator,
        presented: &PresentedToken,
        accepted: &[IssuerId],
    ) -> Result<VerifiedToken<R>, TokenError> {
        validator
            .validate(&presented.token, presented.token_type, accepted)
            .await
    }
}
