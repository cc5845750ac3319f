//! The one place where the stages meet, in order: client authentication → request
//! parameters → policy admission → subject (and actor) token validation → policy decision
//! → minting. Each step's output type proves the step before it.

pub mod dry_run;

use std::borrow::Borrow;
use std::sync::Arc;

use crate::audit::{AuditRecord, RefusalLog};
use crate::client_auth::{AuthenticatedClient, ClientAuthenticator};
use crate::clock::Clock;
use crate::config::IssuerId;
use crate::error::ExchangeError;
use crate::metrics::Metrics;
use crate::mint::{IssuedToken, Minter};
use crate::oauth::form::FormBody;
use crate::policy::{Decided, PolicyStore, Proofs, Targets, Verified};
use crate::request::{PresentedToken, TokenExchangeRequest};
use crate::token::{Actor, Role, Subject, TokenError, TokenValidator, VerifiedToken};

/// The token-exchange pipeline.
pub struct Exchanger {
    metrics: Arc<Metrics>,
    clients: ClientAuthenticator,
    validator: TokenValidator,
    policy: Arc<PolicyStore>,
    minter: Minter,
    clock: Clock,
    refusals: Arc<RefusalLog>,
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
        refusals: Arc<RefusalLog>,
    ) -> Self {
        Self {
            metrics,
            clients,
            validator,
            policy,
            minter,
            clock,
            refusals,
        }
    }

    /// How the audit stream aggregates repeated refusals.
    pub fn refusals(&self) -> &RefusalLog {
        &self.refusals
    }

    /// The token validator (readiness, warm-up).
    pub fn validator(&self) -> &TokenValidator {
        &self.validator
    }

    /// Runs one exchange and writes its audit record.
    pub async fn exchange(
        &self,
        request_id: &str,
        peer: Option<std::net::IpAddr>,
        authorization: Option<&[u8]>,
        form: &FormBody,
    ) -> Result<IssuedToken, ExchangeError> {
        let mut audit = AuditRecord {
            peer,
            ..AuditRecord::default()
        };
        let mode = Exchange { authorization };
        let result = match self.run(&mode, form, &mut audit).await {
            Ok(grant) => match self.minter.mint(&grant) {
                Ok(issued) => Ok((grant, issued)),
                Err(e) => Err(ExchangeError::Mint(e)),
            },
            Err(e) => Err(e),
        };
        match &result {
            Ok((grant, issued)) => {
                audit.granted(request_id, grant, issued).await;
                self.metrics.grant(grant.rule_id());
            }
            Err(error) => {
                self.metrics.refusal(error.stage(), error.reason());
                audit.refused(request_id, error, &self.refusals);
            }
        }
        result.map(|(_, issued)| issued)
    }

    /// The pipeline up to the decision, written once for every [`Mode`]: the mode
    /// obtains the client's and the tokens' proofs, and the decision's type follows from
    /// them (only a real exchange's is a [`Grant`](crate::policy::Grant)).
    async fn run<M: Mode>(
        &self,
        mode: &M,
        form: &FormBody,
        audit: &mut AuditRecord,
    ) -> Result<Decided<M::Proofs>, ExchangeError> {
        // Who is asking comes first: an unauthenticated caller learns nothing about the
        // request beyond 401 and costs no more than a form decode.
        let client = mode.client(&self.clients, form, audit)?;
        let request = TokenExchangeRequest::from_form(form)?;
        audit.targets = Some((request.audiences.clone(), request.resources.clone()));
        // The policy in force when the request arrived decides it to the end, whatever a
        // reload does meanwhile.
        let policy = self.policy.current();
        let actor_type = request.actor.as_ref().map(|a| a.token_type);
        let admission = policy
            .admit::<M::Proofs>(&client, request.subject.token_type, actor_type)
            .map_err(|r| audit.refused_by(r))?;
        let subject = mode
            .token::<Subject>(
                &self.validator,
                &request.subject,
                admission.subject_issuers(),
            )
            .await
            .map_err(ExchangeError::Subject)?;
        audit.subject_token(subject.borrow());
        let actor = match &request.actor {
            Some(presented) => {
                let accepted = admission.actor_issuers(subject.borrow().issuer());
                let actor = mode
                    .token::<Actor>(&self.validator, presented, accepted)
                    .await
                    .map_err(ExchangeError::Actor)?;
                audit.actor_token(actor.borrow());
                Some(actor)
            }
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
            .map_err(|r| audit.refused_by(r))
    }
}

/// How the pipeline obtains its proofs. [`Exchange`] authenticates the client and
/// verifies the tokens; a dry run ([`dry_run`]) names the client and checks the tokens,
/// with or without their signatures. Nothing else differs between the two.
trait Mode {
    /// The proofs this mode holds.
    type Proofs: Proofs;

    /// The client, proven as this mode proves it (noted in the audit record).
    fn client(
        &self,
        clients: &ClientAuthenticator,
        form: &FormBody,
        audit: &mut AuditRecord,
    ) -> Result<<Self::Proofs as Proofs>::Client, ExchangeError>;

    /// A presented token of role `R`, proven as this mode proves it.
    fn token<R: Role>(
        &self,
        validator: &TokenValidator,
        presented: &PresentedToken,
        accepted: &[IssuerId],
    ) -> impl Future<Output = Result<<Self::Proofs as Proofs>::Token<R>, TokenError>> + Send;
}

/// A real exchange: the request's credentials, the tokens' signatures.
struct Exchange<'a> {
    /// The request's Authorization header value.
    authorization: Option<&'a [u8]>,
}

impl Mode for Exchange<'_> {
    type Proofs = Verified;

    fn client(
        &self,
        clients: &ClientAuthenticator,
        form: &FormBody,
        audit: &mut AuditRecord,
    ) -> Result<AuthenticatedClient, ExchangeError> {
        let client = clients.authenticate(self.authorization, form)?;
        audit.client_id = Some(client.id().to_owned());
        audit.auth_method = Some(client.method().as_str());
        Ok(client)
    }

    async fn token<R: Role>(
        &self,
        validator: &TokenValidator,
        presented: &PresentedToken,
        accepted: &[IssuerId],
    ) -> Result<VerifiedToken<R>, TokenError> {
        validator
            .validate(&presented.token, presented.token_type, accepted)
            .await
    }
}
