//! Kubernetes projected service-account tokens as client assertions (`client_assertion_type`
//! `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, as Keycloak 26 accepts them).
//!
//! The cluster's issuer is trusted like an upstream issuer: its keys come from its JWKS
//! (configured, or discovered from `<issuer>/.well-known/openid-configuration`, with a
//! bearer token read from a file at each fetch where the API server asks for one). The
//! client is bound to `system:serviceaccount:<namespace>:<name>` and to the audience
//! gleipnir expects (by default our issuer identifier): a token of another namespace,
//! another service account, for another audience or of another cluster is refused. The
//! `kubernetes.io` claim, when present, must agree with `sub`; a pod-bound token's pod
//! and node are read (not required).
//!
//! Unlike a `private_key_jwt` assertion such a token is not single-use: the kubelet hands
//! the pod the same token for most of its lifetime (up to an hour by default), so it is
//! accepted again until it expires. Its protection is the audience restricted to us (one
//! value, nothing else: a token also valid elsewhere could be replayed here by that other
//! party), the lifetime bound (`max_token_lifetime_seconds`, default 1 h; a token of the
//! API server's extended expiration is refused unless the bound is raised), and the
//! binding to one workload.

use std::sync::Arc;

use super::assertion::{AssertionType, PresentedAssertion};
use super::registry::WorkloadKeys;
use super::{ClientAuthError, Context};
use crate::config::WorkloadKind;

/// A client bound to one service account of one cluster.
pub(crate) struct KubernetesBinding {
    pub(crate) issuer: Arc<WorkloadKeys>,
    pub(crate) namespace: String,
    pub(crate) service_account: String,
}

/// Checks `assertion` as the binding's service-account token.
pub(crate) async fn verify(
    binding: &KubernetesBinding,
    assertion: &PresentedAssertion<'_>,
    cx: &Context<'_>,
) -> Result<(), ClientAuthError> {
    let issuer = &binding.issuer.config;
    let WorkloadKind::Kubernetes { issuer: iss, .. } = &issuer.kind else {
        return Err(ClientAuthError::UntrustedAssertionIssuer);
    };
    if assertion.kind != AssertionType::JwtBearer {
        return Err(ClientAuthError::UnsupportedAssertionType);
    }
    // Before the signature: the exact iss selects the cluster's keys (RFC 8725 §3.8).
    if assertion.iss.as_deref() != Some(iss.as_str()) {
        return Err(ClientAuthError::UntrustedAssertionIssuer);
    }
    if !issuer.algorithms.contains(&assertion.jws.alg) {
        return Err(ClientAuthError::AlgorithmNotAllowed);
    }
    binding.issuer.keys.verify(&assertion.jws).await?;
    let claims = assertion.claims()?;
    if claims.iss.as_deref() != Some(iss.as_str()) {
        return Err(ClientAuthError::UntrustedAssertionIssuer);
    }
    let sub = claims.sub.as_deref().ok_or(ClientAuthError::MissingClaim)?;
    let (namespace, name) = service_account(sub).ok_or(ClientAuthError::ServiceAccountMismatch)?;
    if namespace != binding.namespace {
        return Err(ClientAuthError::NamespaceMismatch);
    }
    if name != binding.service_account {
        return Err(ClientAuthError::ServiceAccountMismatch);
    }
    if let Some(k8s) = &claims.kubernetes {
        let k8s = &k8s.0;
        // What the claim says must be what `sub` says; a pod-bound token names its pod
        // and node (Kubernetes 1.30+), each with a name and uid.
        let named = |o: &crate::jose::JsonObject<super::assertion::KubernetesObject>| {
            !o.0.name.is_empty() && !o.0.uid.is_empty()
        };
        let agrees = k8s.namespace == namespace
            && k8s.serviceaccount.0.name == name
            && named(&k8s.serviceaccount)
            && k8s.pod.as_ref().is_none_or(named)
            && k8s.node.as_ref().is_none_or(named);
        if !agrees {
            return Err(ClientAuthError::MalformedAssertion);
        }
        if let Some(warn_after) = &k8s.warnafter {
            tracing::debug!(
                warn_after = warn_after.0,
                "service-account token of extended expiration"
            );
        }
    }
    claims.check_audience(&issuer.audience, true)?;
    claims.check_times(cx.leeway, issuer.max_token_lifetime_seconds, cx.now)?;
    Ok(())
}

/// `system:serviceaccount:<namespace>:<name>` split.
fn service_account(sub: &str) -> Option<(&str, &str)> {
    let rest = sub.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_subjects() {
        assert_eq!(
            service_account("system:serviceaccount:shop:orders"),
            Some(("shop", "orders"))
        );
        for bad in [
            "system:serviceaccount:shop",
            "system:serviceaccount::orders",
            "system:serviceaccount:shop:",
            "system:node:n1",
            "system:serviceaccount:a:b:c",
        ] {
            assert_eq!(service_account(bad), None, "{bad}");
        }
    }
}
