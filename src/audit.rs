//! The audit record: one event per exchange on the `audit` tracing target, granted or
//! refused, with the facts an operator needs to explain it: the rule that allowed it, or
//! the check that refused it, where that check looked and what it found. Never a token or
//! a secret. `telemetry` writes these events as one JSON line each. Repeated identical
//! refusals are aggregated (`refusals`); grants never are.

pub mod refusals;

use std::net::IpAddr;

use crate::error::ExchangeError;
use crate::mint::IssuedToken;
use crate::policy::{Grant, Refusal};
use crate::token::{Actor, Checked, Subject};
pub use refusals::{RefusalKey, RefusalLog};

/// What is known about an exchange so far; emitted once when it ends.
#[derive(Debug, Default)]
pub struct AuditRecord {
    /// The connection's peer address (a proxy's, behind one).
    pub peer: Option<IpAddr>,
    /// The client, once authenticated.
    pub client_id: Option<String>,
    /// How it authenticated (`client_secret_basic`, `private_key_jwt`, `tls_client_auth`, …).
    pub auth_method: Option<&'static str>,
    /// The workload identity it authenticated as, when not its client id (a service
    /// account, a SPIFFE ID, a certificate's bound name).
    pub client_identity: Option<String>,
    /// The requested `audience` and `resource` values, once the parameters are read.
    pub targets: Option<(Vec<String>, Vec<String>)>,
    /// The subject token's `jti` and declared type, once verified (lineage across hops).
    pub subject_jti: Option<String>,
    /// The declared subject and actor token types.
    pub token_types: Option<(&'static str, Option<&'static str>)>,
    /// The subject's (`iss`, `sub`), once verified.
    pub subject: Option<(String, String)>,
    /// The subject token's delegation chain (`act` subs, current actor first).
    pub subject_chain: Vec<String>,
    /// The actor's (`iss`, `sub`), once verified.
    pub actor: Option<(String, String)>,
    /// The policy's explanation of a refusal.
    pub refusal: Option<Refusal>,
}

impl AuditRecord {
    /// Keeps the policy's explanation for the record; the client gets the check's OAuth
    /// error.
    pub fn refused_by(&mut self, refusal: Refusal) -> ExchangeError {
        let check = refusal.check;
        self.refusal = Some(refusal);
        ExchangeError::Policy(check)
    }

    /// Notes the subject token's identity, `jti`, chain and declared type, once checked.
    pub fn subject_token(&mut self, subject: &Checked<Subject>) {
        self.subject = Some((subject.iss().to_owned(), subject.sub().to_owned()));
        self.subject_jti = subject.jti().map(str::to_owned);
        self.subject_chain = subject.act().iter().map(|a| a.sub.clone()).collect();
        self.token_types = Some((subject.token_type().name(), None));
    }

    /// Notes the actor token's identity and declared type, once checked.
    pub fn actor_token(&mut self, actor: &Checked<Actor>) {
        self.actor = Some((actor.iss().to_owned(), actor.sub().to_owned()));
        if let Some(types) = &mut self.token_types {
            types.1 = Some(actor.token_type().name());
        }
    }

    /// What the record of a granted exchange says, from this record and the decision.
    pub fn grant_record(&self, grant: &Grant, issued: &IssuedToken) -> GrantRecord {
        let chain: Vec<&str> = grant.act().iter().map(|a| a.sub.as_str()).collect();
        let claims: Vec<&str> = grant.claims().keys().map(String::as_str).collect();
        GrantRecord {
            rule: std::sync::Arc::clone(grant.rule_id()),
            client_id: grant.client_id().to_owned(),
            auth_method: self.auth_method,
            client_identity: self.client_identity.clone(),
            certificate_bound: grant.cnf_thumbprint().is_some(),
            subject_token_type: self.token_types.map(|t| t.0),
            actor_token_type: self.token_types.and_then(|t| t.1),
            subject_jti: self.subject_jti.clone(),
            subject_iss: self.subject.as_ref().map(|s| s.0.clone()),
            subject_sub: grant.sub().to_owned(),
            sub_iss: grant.sub_iss().map(str::to_owned),
            actor_iss: self.actor.as_ref().map(|s| s.0.clone()),
            actor_chain: json(&chain),
            aud: json(grant.aud()),
            scope: issued.scope.clone(),
            passthrough_claims: json(&claims),
            exp: grant.exp(),
            jti: issued.jti.clone(),
        }
    }

    /// Emits the record of a granted exchange (`cached`: answered from the re-issue
    /// cache), first waiting for room in the audit stream (`telemetry::audit_slot`): this
    /// record is never dropped. The request timeout bounds the wait; a request it ends is
    /// answered 503 and its token never leaves.
    pub async fn granted(&self, request_id: &str, record: &GrantRecord, cached: bool) {
        let slot = crate::telemetry::audit_slot().await;
        slot.write(|| self.emit_granted(request_id, record, cached));
    }

    fn emit_granted(&self, request_id: &str, record: &GrantRecord, cached: bool) {
        tracing::info!(
            target: "audit",
            request_id,
            decision = "granted",
            cached,
            peer = self.peer.map(tracing::field::display),
            rule = &*record.rule,
            client_id = record.client_id.as_str(),
            auth_method = record.auth_method,
            client_identity = record.client_identity.as_deref(),
            certificate_bound = record.certificate_bound,
            subject_token_type = record.subject_token_type,
            actor_token_type = record.actor_token_type,
            subject_jti = record.subject_jti.as_deref(),
            subject_iss = record.subject_iss.as_deref(),
            subject_sub = record.subject_sub.as_str(),
            sub_iss = record.sub_iss.as_deref(),
            actor_iss = record.actor_iss.as_deref(),
            actor_chain = record.actor_chain.as_str(),
            aud = record.aud.as_str(),
            scope = record.scope.as_str(),
            passthrough_claims = record.passthrough_claims.as_str(),
            exp = record.exp,
            jti = record.jti.as_str(),
        );
    }

    /// Emits the record of a refused exchange, unless `log` counts it as a repeat of one
    /// written in full within its window.
    pub fn refused(&self, request_id: &str, error: &ExchangeError, log: &RefusalLog) {
        let key = RefusalKey {
            stage: error.stage(),
            reason: error.reason(),
            client_id: self.client_id.clone(),
            peer: self.peer,
        };
        if log.admit(key, request_id, std::time::Instant::now()) {
            self.emit_refused(request_id, error);
        }
    }

    fn emit_refused(&self, request_id: &str, error: &ExchangeError) {
        let refusal = self.refusal.as_ref();
        tracing::info!(
            target: "audit",
            request_id,
            decision = "refused",
            peer = self.peer.map(tracing::field::display),
            stage = error.stage(),
            reason = error.reason(),
            on = refusal.map(|r| r.on.as_str()),
            detail = %refusal.map_or_else(|| error.to_string(), |r| r.detail.clone()),
            rule = refusal.and_then(|r| r.rule.as_deref()),
            client_id = self.client_id.as_deref(),
            auth_method = self.auth_method,
            client_identity = self.client_identity.as_deref(),
            audience = self.targets.as_ref().map(|t| json(&t.0)),
            resource = self.targets.as_ref().map(|t| json(&t.1)),
            subject_jti = self.subject_jti.as_deref(),
            subject_iss = self.subject.as_ref().map(|s| s.0.as_str()),
            subject_sub = self.subject.as_ref().map(|s| s.1.as_str()),
            subject_chain = %json(&self.subject_chain),
            actor_iss = self.actor.as_ref().map(|s| s.0.as_str()),
            actor_sub = self.actor.as_ref().map(|s| s.1.as_str()),
        );
    }
}

/// The facts of a granted exchange's audit record, kept so that the re-issue cache can
/// write the same record again for each request it answers (with `cached: true`). Names
/// and identifiers only, never a token.
#[derive(Debug, Clone)]
pub struct GrantRecord {
    /// The policy rule that allowed it.
    pub rule: std::sync::Arc<str>,
    /// The requesting client.
    pub client_id: String,
    /// How it authenticated.
    pub auth_method: Option<&'static str>,
    /// Its workload identity, when it authenticated with one.
    pub client_identity: Option<String>,
    /// Whether the issued token is bound to its certificate (`cnf`).
    pub certificate_bound: bool,
    /// The declared subject token type.
    pub subject_token_type: Option<&'static str>,
    /// The declared actor token type.
    pub actor_token_type: Option<&'static str>,
    /// The subject token's `jti`.
    pub subject_jti: Option<String>,
    /// The subject token's `iss`.
    pub subject_iss: Option<String>,
    /// The issued token's `sub`.
    pub subject_sub: String,
    /// The issued token's `sub_iss`.
    pub sub_iss: Option<String>,
    /// The actor token's `iss`.
    pub actor_iss: Option<String>,
    /// The issued `act` chain's subjects, current actor first, as a JSON array.
    pub actor_chain: String,
    /// The issued `aud`, as a JSON array.
    pub aud: String,
    /// The granted scopes, space-separated.
    pub scope: String,
    /// The names of the passthrough claims, as a JSON array.
    pub passthrough_claims: String,
    /// The issued token's `exp`.
    pub exp: u64,
    /// The issued token's `jti`.
    pub jti: String,
}

impl GrantRecord {
    /// Bytes it holds (the re-issue cache's weigher).
    pub fn size(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        std::mem::size_of::<Self>()
            + self.rule.len()
            + self.client_id.len()
            + opt(&self.client_identity)
            + opt(&self.subject_jti)
            + opt(&self.subject_iss)
            + self.subject_sub.len()
            + opt(&self.sub_iss)
            + opt(&self.actor_iss)
            + self.actor_chain.len()
            + self.aud.len()
            + self.scope.len()
            + self.passthrough_claims.len()
            + self.jti.len()
    }
}

/// A list field as JSON text (`["a","b"]`): tracing fields are scalars, so list-valued
/// fields of the audit record are JSON arrays inside a string.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
