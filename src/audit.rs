//! The audit record: one structured event per exchange on the `audit` tracing target,
//! granted or refused, with the facts an operator needs to explain it. Never a token or
//! a secret. (The policy issue grows this into the full explanation output.)

use crate::error::ExchangeError;
use crate::mint::IssuedToken;
use crate::policy::Grant;

/// What is known about an exchange so far; emitted once when it ends.
#[derive(Debug, Default)]
pub struct AuditRecord {
    /// The client, once authenticated.
    pub client_id: Option<String>,
    /// How it authenticated (`client_secret_basic`, `client_secret_post`).
    pub auth_method: Option<&'static str>,
    /// The subject token's `jti` and declared type, once verified (lineage across hops).
    pub subject_jti: Option<String>,
    /// The declared subject and actor token types.
    pub token_types: Option<(&'static str, Option<&'static str>)>,
    /// The subject's (`iss`, `sub`), once verified.
    pub subject: Option<(String, String)>,
    /// The actor's (`iss`, `sub`), once verified.
    pub actor: Option<(String, String)>,
}

impl AuditRecord {
    /// Emits the record of a granted exchange.
    pub fn granted(&self, request_id: &str, grant: &Grant, issued: &IssuedToken) {
        let chain: Vec<&str> = grant.act().iter().map(|a| a.sub.as_str()).collect();
        tracing::info!(
            target: "audit",
            request_id,
            decision = "granted",
            rule = grant.rule(),
            client_id = grant.client_id(),
            auth_method = self.auth_method,
            subject_token_type = self.token_types.map(|t| t.0),
            actor_token_type = self.token_types.and_then(|t| t.1),
            subject_jti = self.subject_jti.as_deref(),
            subject_iss = self.subject.as_ref().map(|s| s.0.as_str()),
            subject_sub = grant.sub(),
            actor_chain = ?chain,
            aud = ?grant.aud(),
            scope = issued.scope.as_str(),
            exp = grant.exp(),
            jti = issued.jti.as_str(),
        );
    }

    /// Emits the record of a refused exchange.
    pub fn refused(&self, request_id: &str, error: &ExchangeError) {
        tracing::info!(
            target: "audit",
            request_id,
            decision = "refused",
            stage = error.stage(),
            reason = error.reason(),
            detail = %error,
            client_id = self.client_id.as_deref(),
            auth_method = self.auth_method,
            subject_jti = self.subject_jti.as_deref(),
            subject_iss = self.subject.as_ref().map(|s| s.0.as_str()),
            subject_sub = self.subject.as_ref().map(|s| s.1.as_str()),
            actor_iss = self.actor.as_ref().map(|s| s.0.as_str()),
            actor_sub = self.actor.as_ref().map(|s| s.1.as_str()),
        );
    }
}
