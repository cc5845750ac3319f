//! `client_secret_basic` and `client_secret_post` (RFC 6749 §2.3.1): reading the id and
//! secret from the Authorization header (form-decoded after base64) or from the body, and
//! comparing the secret's SHA-256 digest with the registered one in constant time.

use aws_lc_rs::digest;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{AuthMethod, ClientAuthError};
use crate::oauth::form::{self, FormBody};

/// The SHA-256 digest of a client secret: what the registry keeps, zeroized on drop.
pub(crate) struct SecretDigest(Zeroizing<[u8; 32]>);

impl SecretDigest {
    /// The digest of `secret`.
    pub(crate) fn of(secret: &[u8]) -> Self {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(digest::digest(&digest::SHA256, secret).as_ref());
        SecretDigest(out)
    }

    /// A digest no secret is known for (to compare against for an unknown client).
    pub(crate) fn random() -> Option<Self> {
        let mut out = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut *out).ok()?;
        Some(SecretDigest(out))
    }
}

/// A client id and secret as a request presents them.
pub(crate) struct PresentedSecret {
    id: String,
    secret: Zeroizing<String>,
    method: AuthMethod,
}

impl PresentedSecret {
    /// The client id it names.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Compares the secret with `registered` in constant time.
    pub(crate) fn verify(&self, registered: &SecretDigest) -> Result<AuthMethod, ClientAuthError> {
        let presented = SecretDigest::of(self.secret.as_bytes());
        match bool::from(presented.0.ct_eq(&*registered.0)) {
            true => Ok(self.method),
            false => Err(ClientAuthError::WrongSecret),
        }
    }
}

/// The secret credentials of a request, if it presents any: HTTP Basic, or `client_id`
/// and `client_secret` in the body; both at once is refused (RFC 6749 §2.3). A body
/// `client_id` alone is no credential (certificate clients name themselves with it).
pub(crate) fn presented(
    authorization: Option<&[u8]>,
    form: &FormBody,
) -> Result<Option<PresentedSecret>, ClientAuthError> {
    let body_id = form
        .single("client_id")
        .map_err(|_| ClientAuthError::RepeatedParameter)?;
    let body_secret = form
        .single("client_secret")
        .map_err(|_| ClientAuthError::RepeatedParameter)?;
    let (id, secret, method) = match authorization {
        Some(header) => {
            let (id, secret) = parse_basic(header)?;
            if body_secret.is_some() {
                return Err(ClientAuthError::MultipleMethods);
            }
            if body_id.is_some_and(|b| b != id) {
                return Err(ClientAuthError::ClientIdMismatch);
            }
            (id, secret, AuthMethod::ClientSecretBasic)
        }
        None => match (body_id, body_secret) {
            (Some(id), Some(secret)) => (
                id.to_owned(),
                Zeroizing::new(secret.to_owned()),
                AuthMethod::ClientSecretPost,
            ),
            (None, Some(_)) => return Err(ClientAuthError::SecretWithoutId),
            (_, None) => return Ok(None),
        },
    };
    Ok(Some(PresentedSecret { id, secret, method }))
}

/// RFC 7617 Basic credentials; id and secret are form-urlencoded inside (RFC 6749 §2.3.1).
fn parse_basic(header: &[u8]) -> Result<(String, Zeroizing<String>), ClientAuthError> {
    let header = std::str::from_utf8(header).map_err(|_| ClientAuthError::MalformedBasic)?;
    let (scheme, rest) = header
        .split_once(' ')
        .ok_or(ClientAuthError::UnsupportedScheme)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ClientAuthError::UnsupportedScheme);
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| ClientAuthError::MalformedBasic)?,
    );
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(ClientAuthError::MalformedBasic)?;
    let (id, secret) = (
        decoded.get(..colon).unwrap_or_default(),
        decoded.get(colon + 1..).unwrap_or_default(),
    );
    let id = form::decode(id).map_err(|_| ClientAuthError::MalformedBasic)?;
    let secret = Zeroizing::new(form::decode(secret).map_err(|_| ClientAuthError::MalformedBasic)?);
    if id.is_empty() || secret.is_empty() {
        return Err(ClientAuthError::MalformedBasic);
    }
    Ok((id, secret))
}
