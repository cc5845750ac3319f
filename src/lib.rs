//! # gleipnir
//!
//! An OAuth 2.0 Token Exchange (RFC 8693) Security Token Service that keeps delegation
//! chains intact. One request flows in one direction through stages; each stage's output
//! type proves the check before it and can only be built by the code that checks:
//!
//! ```text
//! hyper Request
//!  └─ http::body::read_form              -> FormBody               POST, form type, size cap
//!     └─ ClientAuthenticator::authenticate -> AuthenticatedClient  before any parameter
//!        └─ TokenExchangeRequest::from_form -> TokenExchangeRequest  RFC 8693 §2.1, strict
//!           └─ PolicyEngine::admit -> Admission      client enabled for this mode
//!              ├─ TokenValidator::validate(subject) -> VerifiedToken<Subject>  JWKS cache
//!              └─ TokenValidator::validate(actor)   -> VerifiedToken<Actor>    (when sent)
//!                 └─ Admission::decide -> Grant      delegation chain, targets, scope, lifetime
//!                    └─ Minter::mint(&Grant) -> IssuedToken
//!                       └─ http::response::token     RFC 8693 §2.2.1 JSON
//!  any stage Err ─► error::to_wire ─► RFC 6749 §5.2 error JSON
//! ```
//!
//! The order differs from DESIGN's sketch in two places, on purpose: the client is
//! authenticated before the exchange parameters are read (an unauthenticated caller gets
//! 401 and costs one form decode), and the token-independent policy checks run before any
//! token is validated (a disabled client costs no signature check and no JWKS fetch).
//!
//! Stages: [`exchange`] (request parameters, and where the stages meet), [`client_auth`],
//! [`token`], [`policy`], [`mint`]. The edge: [`http`], [`server`]. Supporting modules,
//! which never import a stage: [`config`], [`clock`], [`jose`], [`keys`], [`oauth`],
//! [`metrics`], [`telemetry`], [`reload`]; [`error`] and [`audit`] read the stages' results (the one
//! error mapping, the audit record) and are used only where the stages meet
//! ([`exchange`]) and at the edge. Assembly: [`app`]. The embedded default for
//! trying it out: [`dev`]. Policy dry runs (`gleipnir policy explain`, `policy test`):
//! [`exchange::dry_run`] and [`cases`].
//!
//! The contract is EXCHANGE-RULES (what is accepted and refused); DESIGN explains the
//! layout. The README's conformance table maps RFC sections to code and tests.

pub mod app;
pub mod audit;
pub mod cases;
pub mod client_auth;
pub mod clock;
pub mod config;
pub mod dev;
pub mod error;
pub mod exchange;
pub mod http;
pub mod jose;
pub mod keys;
pub mod metrics;
pub mod mint;
pub mod oauth;
pub mod policy;
pub mod reload;
pub mod request;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod upstream;
