//! Sealing the root upstream token kept in a lineage record for re-introspection: the
//! store never holds a usable token. AES-256-GCM with a random 96-bit nonce per token
//! (aws-lc-rs `RandomizedNonceKey`), the issuer's name as associated data (a sealed token
//! cannot be replayed as another issuer's), the key the SHA-256 of `store.seal_key` (a
//! secret of at least 32 bytes shared by the replicas), or random per process when none
//! is configured (the in-process store, which dies with the process anyway).

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// Seals and opens upstream tokens. Never `Debug`-prints its key.
pub struct Sealer {
    key: RandomizedNonceKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

/// Shortest `store.seal_key` accepted, in bytes.
pub const MIN_SEAL_KEY_BYTES: usize = 32;

impl Sealer {
    /// A sealer keyed by `secret` (at least [`MIN_SEAL_KEY_BYTES`]).
    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_SEAL_KEY_BYTES {
            return Err(format!(
                "must be at least {MIN_SEAL_KEY_BYTES} bytes (e.g. `openssl rand -base64 48`)"
            ));
        }
        let key = Zeroizing::new(digest::digest(&digest::SHA256, secret).as_ref().to_vec());
        let key = RandomizedNonceKey::new(&AES_256_GCM, &key)
            .map_err(|_| "cannot make an AES-256-GCM key".to_owned())?;
        Ok(Self { key })
    }

    /// A sealer with a random key, for this process only.
    pub fn ephemeral() -> Result<Self, String> {
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(secret.as_mut()).map_err(|_| "random source failed".to_owned())?;
        Self::from_secret(secret.as_ref())
    }

    /// `token` sealed for `issuer`: base64url(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, token: &str, issuer: &str) -> Option<String> {
        let mut in_out = Zeroizing::new(token.as_bytes().to_vec());
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(issuer.as_bytes()), &mut *in_out)
            .ok()?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&in_out);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// The token sealed for `issuer`, if it opens.
    pub fn open(&self, sealed: &str, issuer: &str) -> Option<Zeroizing<String>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let (nonce, ciphertext) = bytes.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(issuer.as_bytes()), &mut in_out)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok().map(Zeroizing::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tokens_open_only_for_their_issuer_and_key() {
        let sealer = Sealer::from_secret(&[7u8; 32]).unwrap();
        let sealed = sealer.seal("opaque-token", "corp").unwrap();
        assert!(!sealed.contains("opaque"));
        assert_eq!(
            sealer.open(&sealed, "corp").as_deref().map(String::as_str),
            Some("opaque-token")
        );
        assert!(sealer.open(&sealed, "other").is_none());
        let other = Sealer::from_secret(&[8u8; 32]).unwrap();
        assert!(other.open(&sealed, "corp").is_none());
        assert!(sealer.open("not-base64!", "corp").is_none());
        assert!(Sealer::from_secret(&[1u8; 31]).is_err());
        // Two seals of one token differ (random nonces).
        assert_ne!(sealed, sealer.seal("opaque-token", "corp").unwrap());
    }
}
