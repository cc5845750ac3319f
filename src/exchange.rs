//! The one place where the stages meet, in order: client authentication → request
//! parameters → policy admission → subject (and actor) token validation → policy decision
//! → minting. Each step's output type proves the step before it.

pub mod dry_run;

use std::sync::Arc;

use crate::audit::AuditRecord;
use crate::client_auth::ClientAuthenticator;
use crate::clock::Clock;
use crate::error::ExchangeError;
use crate::metrics::Metrics;
use crate::mint::{IssuedToken, Minter};
use crate::oauth::form::FormBody;
use crate::policy::{PolicyStore, Targets};
use crate::request::TokenExchangeRequest;
use crate::token::{Actor, Subject, TokenValidator};
use dry_run::Signatures;

/// The token-exchange pipeline.
pub struct Exchanger {
    metrics: Arc<Metrics>,
    clients: ClientAuthenticator,
    validator: TokenValidator,
    policy: Arc<PolicyStore>,
    minter: Minter,
    clock: Clock,
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
    ) -> Self {
        Self {
            metrics,
            clients,
            validator,
            policy,
            minter,
            clock,
        }
    }

    /// The token validator (readiness, warm-up).
    pub fn validator(&self) -> &TokenValidator {
        &self.validator
    }

    /// The policy in force, and its reload.
    pub fn policy(&self) -> &Arc<PolicyStore> {
        &self.policy
    }

    /// The minter (its key is published in our JWKS).
    pub fn minter(&self) -> &Minter {
        &self.minter
    }

    /// Runs one exchange and writes its audit record.
    pub async fn exchange(
        &self,
        request_id: &str,
        authorization: Option<&[u8]>,
        form: &FormBody,
    ) -> Result<IssuedToken, ExchangeError> {
        let mut audit = AuditRecord::default();
        let result = self.run(authorization, form, &mut audit).await;
        match &result {
            Ok((grant, issued)) => {
                self.metrics.grant(grant.rule_id());
                audit.granted(request_id, grant, issued);
            }
            Err(error) => {
                self.metrics.refusal(error.stage(), error.reason());
                audit.refused(request_id, error);
            }
        }
        result.map(|(_, issued)| issued)
    }

    async fn run(
        &self,
        authorization: Option<&[u8]>,
        form: &FormBody,
        audit: &mut AuditRecord,
    ) -> Result<(crate::policy::Grant, IssuedToken), ExchangeError> {
        // Who is asking comes first: an unauthenticated caller learns nothing about the
        // request beyond 401 and costs no more than a form decode (EXCHANGE-RULES §3).
        let client = self.clients.authenticate(authorization, form)?;
        audit.client_id = Some(client.id().to_owned());
        audit.auth_method = Some(client.method().as_str());
        let request = TokenExchangeRequest::from_form(form)?;
        audit.targets = Some((request.audiences.clone(), request.resources.clone()));
        // The policy in force when the request arrived decides it to the end, whatever a
        // reload does meanwhile.
        let policy = self.policy.current();
        let admission = policy
            .admit(
                &client,
                request.subject.token_type,
                request.actor.as_ref().map(|a| a.token_type),
            )
            .map_err(|r| audit.refused_by(r))?;

        let subject = self
            .check_token::<Subject>(
                &request.subject,
                admission.subject_issuers(),
                Signatures::Verified,
            )
            .await
            .map_err(ExchangeError::Subject)?;
        audit.subject = Some((subject.iss().to_owned(), subject.sub().to_owned()));
        audit.subject_jti = subject.jti().map(str::to_owned);
        audit.subject_chain = subject.act().iter().map(|a| a.sub.clone()).collect();
        let actor = match &request.actor {
            Some(presented) => {
                let actor = self
                    .check_token::<Actor>(
                        presented,
                        admission.actor_issuers(subject.issuer()),
                        Signatures::Verified,
                    )
                    .await
                    .map_err(ExchangeError::Actor)?;
                audit.actor = Some((actor.iss().to_owned(), actor.sub().to_owned()));
                Some(actor)
            }
            None => None,
        };
        let actor_type = actor.as_ref().map(|a| a.token_type().name());
        audit.token_types = Some((subject.token_type().name(), actor_type));

        let targets = Targets {
            audiences: &request.audiences,
            resources: &request.resources,
            scope: request.scope.as_deref(),
            requested_token_type: request.requested_token_type,
        };
        let grant = admission
            .decide(&subject, actor.as_ref(), targets, self.clock.now())
            .map_err(|r| audit.refused_by(r))?;
        let issued = self.minter.mint(&grant)?;
        Ok((grant, issued))
    }
}
