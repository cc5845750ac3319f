//! The client certificate a request presents (RFC 8705 §2): the chain of its TLS
//! connection, or, when the connection comes from a configured trusted proxy (a service
//! mesh sidecar that terminates TLS), the certificate that proxy forwards in Envoy's
//! `x-forwarded-client-cert` header. The header is believed from a trusted proxy only,
//! never otherwise: anyone else could write any certificate into it.
//!
//! The header (Envoy's format) is a comma-separated list of elements, one per proxy hop,
//! each `Key=value` pairs separated by `;`, values optionally double-quoted: `By` (the
//! proxy's own URI SAN), `Hash` (hex SHA-256 of the client certificate's DER), `Cert`
//! (the URL-encoded PEM certificate), `Chain` (the URL-encoded PEM chain), `Subject`,
//! `URI`, `DNS`. The last element is the one the trusted proxy itself appended (earlier
//! ones came from hops further away, which we do not trust). Its `Cert` is required: the
//! names are read from the certificate itself, never from `URI`/`DNS`/`Subject`, and a
//! `Hash`, when present, must be the certificate's.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::{ClientAuthError, ClientRequest};
use crate::config::ClientCertificatesConfig;

/// What the request presents as the client's certificate.
pub(crate) enum Certificates {
    /// Nothing.
    None,
    /// A chain, leaf first.
    Chain(Vec<CertificateDer<'static>>),
    /// A forwarded certificate that cannot be used (untrusted peer, unreadable).
    Refused(ClientAuthError),
}

impl Certificates {
    /// Whether the request sent a certificate at all (usable or not).
    pub(crate) fn is_presented(&self) -> bool {
        !matches!(self, Certificates::None)
    }

    /// The chain, or why there is none to authenticate with.
    pub(crate) fn chain(&self) -> Result<&[CertificateDer<'static>], ClientAuthError> {
        match self {
            Certificates::Chain(chain) => Ok(chain),
            Certificates::None => Err(ClientAuthError::NoClientCertificate),
            Certificates::Refused(e) => Err(*e),
        }
    }
}

/// The certificate of `request`: forwarded by a trusted proxy, else the connection's own.
pub(crate) fn presented(
    request: &ClientRequest<'_>,
    proxies: &ClientCertificatesConfig,
) -> Certificates {
    if let Some(header) = request.forwarded_certificate {
        let trusted = request.peer.is_some_and(|peer| proxies.trusts(peer));
        if !trusted {
            return Certificates::Refused(ClientAuthError::ForwardedCertificateUntrusted);
        }
        return match forwarded(header) {
            Some(chain) => Certificates::Chain(chain),
            None => Certificates::Refused(ClientAuthError::MalformedForwardedCertificate),
        };
    }
    match request.tls_certificates {
        Some(chain) if !chain.is_empty() => Certificates::Chain(chain.to_vec()),
        _ => Certificates::None,
    }
}

/// The certificate and chain of the last element of an `x-forwarded-client-cert` value.
fn forwarded(header: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let header = std::str::from_utf8(header).ok()?;
    let element = split_outside_quotes(header, ',').pop()?;
    let (mut cert, mut chain, mut hash) = (None, None, None);
    for pair in split_outside_quotes(element, ';') {
        let (key, value) = pair.split_once('=')?;
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "cert" => cert = Some(percent_decode(value)?),
            "chain" => chain = Some(percent_decode(value)?),
            "hash" => hash = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    let leaf = CertificateDer::pem_slice_iter(&cert?).next()?.ok()?;
    if let Some(hash) = hash {
        let actual: String = crate::x509::thumbprint(&leaf)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual != hash {
            return None;
        }
    }
    let mut out = vec![leaf.clone()];
    if let Some(chain) = chain {
        for der in CertificateDer::pem_slice_iter(&chain) {
            let der = der.ok()?;
            if der != leaf {
                out.push(der);
            }
        }
    }
    Some(out)
}

/// `value` split on `separator` where it is not inside double quotes.
fn split_outside_quotes(value: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in value.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(value.get(start..i).unwrap_or_default());
            start = i + c.len_utf8();
        }
    }
    parts.push(value.get(start..).unwrap_or_default());
    parts.retain(|p| !p.trim().is_empty());
    parts
}

/// `%XX` decoding (a `+` stays a `+`: base64 uses it).
fn percent_decode(value: &str) -> Option<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_pem() -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gw.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), cert.der().to_vec())
    }

    fn encode(pem: &str) -> String {
        pem.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[test]
    fn the_last_element_s_certificate_is_read() {
        let (pem, der) = cert_pem();
        let (other, _) = cert_pem();
        let hash: String = crate::x509::thumbprint(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let header = format!(
            "By=spiffe://a/far;Cert=\"{}\",By=spiffe://a/sidecar;Hash={hash};Cert=\"{}\";URI=spiffe://a/x;Subject=\"CN=a,O=b\"",
            encode(&other),
            encode(&pem)
        );
        let chain = forwarded(header.as_bytes()).unwrap();
        assert_eq!(chain[0].as_ref(), der.as_slice());
        let wrong_hash = header.replace(&hash, &"0".repeat(64));
        assert!(forwarded(wrong_hash.as_bytes()).is_none());
        assert!(forwarded(b"By=spiffe://a/sidecar;URI=spiffe://a/x").is_none());
        assert!(forwarded(b"Cert=\"%zz\"").is_none());
        assert!(forwarded(b"").is_none());
    }
}
