//! SPIFFE JWT-SVIDs as client assertions (draft-ietf-oauth-spiffe-client-auth:
//! `client_assertion_type` `urn:ietf:params:oauth:client-assertion-type:jwt-spiffe`).
//!
//! The trust domain's JWT-SVID keys come from its trust bundle: a file as a SPIRE agent
//! writes it (re-read when its contents change) or a bundle endpoint (cached as a JWKS).
//! The client is bound to its SPIFFE ID, compared exactly; an SVID of another trust
//! domain is refused before its signature is checked (the trust domain selects the
//! keys), one of another workload after. `aud` must be the one value gleipnir expects
//! (by default our issuer identifier). As the draft notes, SPIFFE implementations reuse
//! an SVID until it expires: `jti` is not required and an SVID is not single-use; it is
//! bounded by its audience, its lifetime and the binding to one SPIFFE ID.

use std::sync::Arc;

use super::assertion::{AssertionType, PresentedAssertion};
use super::registry::WorkloadKeys;
use super::{ClientAuthError, Context};
use crate::config::{WorkloadKind, spiffe_trust_domain};

/// A client bound to one SPIFFE ID.
pub(crate) struct SpiffeBinding {
    pub(crate) issuer: Arc<WorkloadKeys>,
    pub(crate) spiffe_id: String,
}

/// Checks `assertion` as the binding's JWT-SVID.
pub(crate) async fn verify(
    binding: &SpiffeBinding,
    assertion: &PresentedAssertion<'_>,
    cx: &Context<'_>,
) -> Result<(), ClientAuthError> {
    let issuer = &binding.issuer.config;
    let WorkloadKind::Spiffe { trust_domain, .. } = &issuer.kind else {
        return Err(ClientAuthError::TrustDomainMismatch);
    };
    if assertion.kind != AssertionType::JwtSpiffe {
        return Err(ClientAuthError::UnsupportedAssertionType);
    }
    // Before the signature: the trust domain selects the bundle's keys.
    if spiffe_trust_domain(&assertion.sub) != Some(trust_domain.as_str()) {
        return Err(ClientAuthError::TrustDomainMismatch);
    }
    if !issuer.algorithms.contains(&assertion.jws.alg) {
        return Err(ClientAuthError::AlgorithmNotAllowed);
    }
    binding.issuer.keys.verify(&assertion.jws).await?;
    let claims = assertion.claims()?;
    if claims.sub.as_deref() != Some(binding.spiffe_id.as_str()) {
        return Err(ClientAuthError::SpiffeIdMismatch);
    }
    claims.check_audience(&issuer.audience, true)?;
    claims.check_times(cx.leeway, issuer.max_token_lifetime_seconds, cx.now)?;
    Ok(())
}
