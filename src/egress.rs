//! Mesh egress: what lets a gateway ask for a token on every outbound request.
//!
//! - [`cache`]: the re-issue cache. An exchange whose inputs are byte for byte those of
//!   an earlier grant, under the same policy and signing key, gets the earlier token back
//!   while enough of its lifetime remains. The exchange pipeline (`exchange`) consults it
//!   after client authentication and the policy's admission, before any token is
//!   validated.
//! - [`forward_auth`]: the forward-auth endpoint (`[forward_auth]`) that Envoy's
//!   `ext_authz` (HTTP service), Istio's `envoyExtAuthzHttp` provider, nginx's
//!   `auth_request` and Traefik's ForwardAuth call with the original request's headers:
//!   it turns them into a token-exchange request (the subject token from the original
//!   `Authorization`, the target from the original host and path through configured
//!   routes) and runs it through the same pipeline and policy as `POST /token`.
//!
//! Neither decides anything itself: the cache only answers again what the pipeline
//! granted, and the adapter only reads a request in another shape.

pub mod cache;
pub mod forward_auth;
