//! The dry run behind `gleipnir policy explain` and `gleipnir policy test`: the exchange
//! pipeline for a client named by the operator, without client authentication and
//! without minting. It reads the parameters as a request's, validates the tokens (with
//! their signatures, or offline without them), asks the policy in force, and returns the
//! decision with its explanation. Nothing is signed and no audit record is written.

use crate::config::IssuerId;
use crate::error::{ExchangeError, WireError, to_wire};
use crate::oauth::form::FormBody;
use crate::policy::{Grant, Refusal, Targets};
use crate::token::{Actor, Role, Subject, TokenError, VerifiedToken};

use super::Exchanger;
use crate::request::{PresentedToken, TokenExchangeRequest};

/// Whether the dry run checks signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    /// Verified against the issuers' keys (fetched now) or by introspection.
    Verified,
    /// Not checked: every other check runs; opaque tokens cannot be explained.
    Offline,
}

/// What a granted dry run would have issued. Not a [`Grant`]: nothing a dry run decides
/// (for an unauthenticated client, perhaps on unsigned tokens) can reach the minter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The rule that allowed it.
    pub rule: String,
    /// `sub`.
    pub sub: String,
    /// `aud`.
    pub aud: Vec<String>,
    /// The granted scopes.
    pub scope: Vec<String>,
    /// The `act` chain's subjects, current actor first.
    pub act: Vec<String>,
    /// Seconds until `exp`.
    pub lifetime: u64,
    /// The names of the passthrough claims.
    pub claims: Vec<String>,
    /// The token type.
    pub token_type: &'static str,
}

impl Decision {
    fn of(grant: &Grant) -> Self {
        Self {
            rule: grant.rule().to_owned(),
            sub: grant.sub().to_owned(),
            aud: grant.aud().to_vec(),
            scope: grant.scope().to_vec(),
            act: grant.act().iter().map(|a| a.sub.clone()).collect(),
            lifetime: grant.exp().saturating_sub(grant.iat()),
            claims: grant.claims().keys().cloned().collect(),
            token_type: grant.token_type().name(),
        }
    }
}

/// The decision of a dry run and why.
#[derive(Debug)]
pub struct Explanation {
    /// What would be issued, or the refusal as a stage error.
    pub outcome: Result<Decision, ExchangeError>,
    /// The policy's own explanation, when the policy refused.
    pub refusal: Option<Refusal>,
    /// How the tokens were checked.
    pub signatures: Signatures,
}

impl Explanation {
    /// What the client would be told, for a refusal.
    pub fn wire(&self) -> Option<WireError> {
        self.outcome.as_ref().err().map(|e| to_wire(e, true))
    }

    /// `stage/reason` of a refusal (`policy/actor_in_chain`), `granted` otherwise.
    pub fn verdict(&self) -> String {
        match &self.outcome {
            Ok(_) => "granted".into(),
            Err(e) => format!("{}/{}", e.stage(), e.reason()),
        }
    }

    /// The explanation as lines of text; offline, each says so.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match &self.outcome {
            Ok(d) => {
                lines.push("decision: granted".into());
                lines.push(format!("rule: {}", d.rule));
                lines.push(format!("sub: {}", d.sub));
                lines.push(format!("aud: {}", d.aud.join(" ")));
                lines.push(format!("scope: {}", d.scope.join(" ")));
                lines.push(format!("act (current actor first): {}", d.act.join(" <- ")));
                lines.push(format!("lifetime: {} s", d.lifetime));
                lines.push(format!("passthrough claims: {}", d.claims.join(" ")));
                lines.push(format!("token type: {}", d.token_type));
            }
            Err(error) => {
                lines.push("decision: refused".into());
                lines.push(format!("stage: {}", error.stage()));
                lines.push(format!("check: {}", error.reason()));
                match &self.refusal {
                    Some(refusal) => {
                        lines.push(format!("on: {}", refusal.on));
                        lines.push(format!("detail: {}", refusal.detail));
                        if let Some(rule) = &refusal.rule {
                            lines.push(format!("rule: {rule}"));
                        }
                    }
                    None => lines.push(format!("detail: {error}")),
                }
                let wire = to_wire(error, true);
                lines.push(format!(
                    "client is told: {} {} \"{}\"",
                    wire.status.as_u16(),
                    wire.code.as_str(),
                    wire.description
                ));
            }
        }
        if self.signatures == Signatures::Offline {
            for line in &mut lines {
                *line = format!("[offline: signatures not verified] {line}");
            }
        }
        lines
    }
}

impl Exchanger {
    /// Validates a presented token: with its signature (as every exchange does), or
    /// offline without it (dry runs only).
    pub(super) async fn check_token<R: Role>(
        &self,
        presented: &PresentedToken,
        accepted: &[IssuerId],
        signatures: Signatures,
    ) -> Result<VerifiedToken<R>, TokenError> {
        let (token, declared) = (&presented.token, presented.token_type);
        match signatures {
            Signatures::Verified => self.validator.validate(token, declared, accepted).await,
            Signatures::Offline => {
                self.validator
                    .check_unsigned(token, declared, accepted)
                    .await
            }
        }
    }

    /// Fetches every upstream issuer's keys once, as a keeper would (a dry run has no
    /// keeper tasks). Each fetch is bounded by the upstream timeouts.
    pub async fn fetch_issuer_keys(&self) {
        let mut fetches = tokio::task::JoinSet::new();
        for cache in self.validator.keepers() {
            fetches.spawn(async move { cache.maintain().await });
        }
        while fetches.join_next().await.is_some() {}
    }

    /// Runs the exchange `form` describes for `client_id`, up to the decision.
    /// `form` holds the token-exchange parameters (`grant_type`, `subject_token`, ...).
    pub async fn dry_run(
        &self,
        client_id: &str,
        form: &FormBody,
        signatures: Signatures,
    ) -> Explanation {
        let mut refusal = None;
        let outcome = self
            .dry_run_inner(client_id, form, signatures, &mut refusal)
            .await
            .map(|grant| Decision::of(&grant));
        Explanation {
            outcome,
            refusal,
            signatures,
        }
    }

    async fn dry_run_inner(
        &self,
        client_id: &str,
        form: &FormBody,
        signatures: Signatures,
        refusal: &mut Option<Refusal>,
    ) -> Result<Grant, ExchangeError> {
        let mut refused = |r: Refusal| {
            let check = r.check;
            *refusal = Some(r);
            ExchangeError::Policy(check)
        };
        let client = self.clients.assume(client_id)?;
        let request = TokenExchangeRequest::from_form(form)?;
        let policy = self.policy.current();
        let admission = policy
            .admit(
                &client,
                request.subject.token_type,
                request.actor.as_ref().map(|a| a.token_type),
            )
            .map_err(&mut refused)?;
        let subject = self
            .check_token::<Subject>(&request.subject, admission.subject_issuers(), signatures)
            .await
            .map_err(ExchangeError::Subject)?;
        let actor = match &request.actor {
            Some(presented) => Some(
                self.check_token::<Actor>(
                    presented,
                    admission.actor_issuers(subject.issuer()),
                    signatures,
                )
                .await
                .map_err(ExchangeError::Actor)?,
            ),
            None => None,
        };
        let targets = Targets {
            audiences: &request.audiences,
            resources: &request.resources,
            scope: request.scope.as_deref(),
            requested_token_type: request.requested_token_type,
        };
        admission
            .decide(&subject, actor.as_ref(), targets, self.clock.now())
            .map_err(refused)
    }
}
