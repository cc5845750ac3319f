//! # gleipnir
//!
//! An OAuth 2.0 Token Exchange (RFC 8693) Security Token Service that keeps delegation
//! chains intact. One request flows in one direction through stages; each stage's output
//! type proves the check before it and can only be built by the code that checks:
//!
//! ```text
//! hyper Request
//!  └─ http::body::read_form               -> FormBody               POST, form type, size cap
//!     └─ ClientAuthenticator::authenticate -> AuthenticatedClient   before any parameter
//!        └─ RateLimiter::check                                       policy rate_limit (429)
//!        └─ TokenExchangeRequest::from_form -> TokenExchangeRequest  RFC 8693 §2.1, strict
//!           └─ PolicyEngine::admit -> Admission           client enabled for this mode
//!              ├─ TokenValidator::validate(subject) -> VerifiedToken<Subject>  JWKS or RFC 7662
//!              └─ TokenValidator::validate(actor)   -> VerifiedToken<Actor>    (when sent)
//!                 └─ Admission::decide -> Grant           delegation chain, targets, scope, lifetime
//!                    └─ Lifecycle::check(parent jti)      a re-exchanged token's lineage clean
//!                    └─ Minter::mint(&Grant) -> IssuedToken
//!                    └─ Lifecycle::record                 lineage stored before the token leaves
//!                       └─ http::response::token          RFC 8693 §2.2.1 JSON
//!  any stage Err ─► error::to_wire ─► RFC 6749 §5.2 error JSON
//! ```
//!
//! The client is authenticated before the exchange parameters are read (an
//! unauthenticated caller gets 401 and costs one form decode), and the token-independent
//! policy checks run before any token is validated (a disabled client costs no signature
//! check and no JWKS fetch).
//!
//! ## Proofs, and the dry run
//!
//! A passed check is a value, never a boolean. A token earns [`token::Checked`] (issuer,
//! type, algorithm, claims, times) and then [`token::VerifiedToken`] (its signature or
//! its issuer's introspection answer vouched for it); a client is an
//! [`client_auth::AuthenticatedClient`], or, for an operator's dry run, a
//! [`client_auth::NamedClient`]. The pipeline ([`exchange`]) is written once, generic over
//! how the proofs are obtained; the policy decides on either set ([`policy::Proofs`]) with
//! the same code, and only a decision on verified proofs is a [`policy::Grant`], the one
//! thing [`mint::Minter::mint`] accepts. `gleipnir policy explain` and `policy test`
//! ([`exchange::dry_run`], [`cases`]) therefore cannot mint.
//!
//! ## Modules
//!
//! Stages, in request order: [`http`] and [`server`] (the edge: the only modules that
//! know hyper), [`client_auth`], [`request`], [`token`], [`policy`], [`mint`]; they
//! meet in [`exchange`]; [`egress`] adds the re-issue cache the exchange consults and
//! the forward-auth endpoint for gateways, which feeds it requests. [`error`] maps every stage's error to the wire, exhaustively;
//! [`audit`] records each exchange. Supporting modules, which never import a stage:
//! [`config`], [`clock`] (the only reader of wall time), [`jose`], [`keys`], [`oauth`]
//! (wire vocabulary and form decoding), [`upstream`] (the HTTP client with its limits, the
//! JWKS cache, discovery), [`store`] (state shared across replicas), [`metrics`],
//! [`telemetry`] (the log streams and, with `[telemetry.otlp]`, traces over OTLP),
//! [`reload`], [`x509`] (the names and dates of certificates). The lifecycle of our tokens
//! (lineage, RFC 7662 introspection, RFC 7009 and admin revocation) is [`lifecycle`],
//! per-client rate limits [`ratelimit`], both on the [`store`]. Assembly: [`app`]. The
//! embedded default for trying it out:
//! [`dev`].
//!
//! ## Where to add
//!
//! - **A client authentication method**: a file under `src/client_auth/` beside
//!   `secret.rs` that reads and checks its credentials, a variant of the registry's
//!   credential (how a client is registered, `client_auth/registry.rs`), the arms of the
//!   one dispatch in [`client_auth::ClientAuthenticator::authenticate`], its settings in
//!   `config/clients.rs`, and its errors in [`error::to_wire`]. Keys it fetches go through
//!   [`upstream`].
//! - **A store backend** (Redis, Valkey): a file under `src/store/` beside `memory.rs`, a
//!   variant of [`store::Store`] with its arm in each method, its settings in the
//!   configuration, and its errors ([`store::StoreError`]).
//! - **A policy condition**: a variant of the condition test in `policy.rs`
//!   (`ConditionTest`), its parsing in `policy/file.rs`, and its evaluation where
//!   conditions hold (`policy/fields.rs`); always-enforced rules are functions of
//!   `policy/rules.rs`, each with its own unit tests.
//! - **An issued-token format**: [`mint`] (claims and signing) and the requested token
//!   type in [`oauth::TokenType`] and [`request`]; the decision carries the type in the
//!   [`policy::Grant`].
//!
//! The README states the exchange rules, the configuration and the conformance table
//! (which RFC section is implemented and tested where).

pub mod app;
pub mod audit;
pub mod cases;
pub mod client_auth;
pub mod clock;
pub mod config;
pub mod dev;
pub mod egress;
pub mod error;
pub mod exchange;
pub mod http;
pub mod jose;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod mint;
pub mod oauth;
pub mod policy;
pub mod ratelimit;
pub mod reload;
pub mod request;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod upstream;
pub mod x509;
