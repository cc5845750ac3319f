//! The dry run behind `gleipnir policy explain` and `gleipnir policy test`: the exchange
//! pipeline for a client named by the operator, without client authentication and
//! without minting. It reads the parameters as a request's, validates the tokens (with
//! their signatures, or offline without them), asks the policy in force, and returns the
//! decision with its explanation. Nothing is signed and no audit record is written.

use super::{Exchanger, Mode};
use crate::audit::AuditRecord;
use crate::client_auth::{ClientAuthenticator, NamedClient};
use crate::config::IssuerId;
use crate::error::{ExchangeError, WireError, to_wire};
use crate::oauth::form::FormBody;
use crate::policy::{Decided, Refusal, Unverified};
use crate::request::PresentedToken;
use crate::token::{Checked, Role, TokenError, TokenValidator};

/// Whether the dry run checks signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    /// Verified against the issuers' keys (fetched now) or by introspection.
    Verified,
    /// Not checked: every other check runs; opaque tokens cannot be explained.
    Offline,
}

/// What a granted dry run would have issued. Made from a `Decided<Unverified>`, never a
/// [`Grant`](crate::policy::Grant): nothing a dry run decides (for an unauthenticated
/// client, perhaps on unsigned tokens) can reach the minter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The rule that allowed it.
    pub rule: String,
    /// `sub`.
    pub sub: String,
    /// `sub_iss`, the subject's issuer, when the token would name it.
    pub sub_iss: Option<String>,
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
    fn of(grant: &Decided<Unverified>) -> Self {
        Self {
            rule: grant.rule().to_owned(),
            sub: grant.sub().to_owned(),
            sub_iss: grant.sub_iss().map(str::to_owned),
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
                if let Some(sub_iss) = &d.sub_iss {
                    lines.push(format!("sub_iss: {sub_iss}"));
                }
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

/// A dry run: the client named by the operator, the tokens checked with their
/// signatures or offline.
struct DryRun<'a> {
    client_id: &'a str,
    signatures: Signatures,
}

impl Mode for DryRun<'_> {
    type Proofs = Unverified;

    async fn client(
        &self,
        clients: &ClientAuthenticator,
        _: &FormBody,
        _: &mut AuditRecord,
    ) -> Result<NamedClient, ExchangeError> {
        Ok(clients.named(self.client_id)?)
    }

    async fn token<R: Role>(
        &self,
        validator: &TokenValidator,
        presented: &PresentedToken,
        accepted: &[IssuerId],
    ) -> Result<Checked<R>, TokenError> {
        let (token, declared) = (&presented.token, presented.token_type);
        match self.signatures {
            Signatures::Verified => validator
                .validate(token, declared, accepted)
                .await
                .map(|verified| verified.into_checked()),
            Signatures::Offline => validator.check_unsigned(token, declared, accepted),
        }
    }
}

impl Exchanger {
    /// Fetches every upstream issuer's keys once, as a keeper would (a dry run has no
    /// keeper tasks). Each fetch is bounded by the upstream timeouts.
    pub async fn fetch_issuer_keys(&self) {
        let mut fetches = tokio::task::JoinSet::new();
        for cache in self.validator.keepers() {
            fetches.spawn(async move { cache.maintain().await });
        }
        while fetches.join_next().await.is_some() {}
    }

    /// Runs the exchange `form` describes for `client_id`, up to the decision, through
    /// the same pipeline as an exchange. `form` holds the token-exchange parameters
    /// (`grant_type`, `subject_token`, ...). Nothing is signed and no audit record is
    /// written.
    pub async fn dry_run(
        &self,
        client_id: &str,
        form: &FormBody,
        signatures: Signatures,
    ) -> Explanation {
        let mode = DryRun {
            client_id,
            signatures,
        };
        let mut record = AuditRecord::default();
        let outcome = self.run(&mode, form, &mut record).await;
        Explanation {
            outcome: outcome.map(|decided| Decision::of(&decided)),
            refusal: record.refusal,
            signatures,
        }
    }
}
