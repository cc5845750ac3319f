//! `[[workload_issuers]]` and `[client_certificates]`: the third parties whose assertions
//! authenticate clients (a Kubernetes cluster's service-account issuer, a SPIFFE trust
//! domain), and the proxies trusted to forward a client's certificate.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::issuers::{DEFAULT_MAX_TOKEN_LIFETIME, JwksLocation, url_allowed};
use super::{Checker, bounded};
use crate::jose::JwsAlgorithm;

/// Default ceiling on a federated assertion's lifetime: an hour, the kubelet's default
/// for projected service-account tokens.
pub const DEFAULT_FEDERATED_MAX_LIFETIME: u64 = 3600;
const HTTPS_ONLY: &str =
    "must be an https URL (http only with allow_http = true, for loopback tests)";

/// A trusted issuer of workload identities.
#[derive(Debug, Clone)]
pub struct WorkloadIssuerConfig {
    /// The name clients refer to.
    pub name: String,
    /// What it is, and where its keys are.
    pub kind: WorkloadKind,
    /// The one `aud` value its tokens must carry to be presented here (default: our own
    /// `issuer`).
    pub audience: String,
    /// The algorithms its tokens may use.
    pub algorithms: Vec<JwsAlgorithm>,
    /// Longest lifetime its tokens may claim (`exp - iat`).
    pub max_token_lifetime_seconds: u64,
    /// How long fetched keys may still be used while the source is down.
    pub max_staleness_seconds: u64,
    /// Plain-http URLs allowed (loopback tests).
    pub allow_http: bool,
}

/// The kinds of workload issuer.
#[derive(Debug, Clone)]
pub enum WorkloadKind {
    /// A Kubernetes cluster's service-account token issuer, configured like an upstream
    /// issuer (OIDC discovery and JWKS).
    Kubernetes {
        /// The exact `iss` of its tokens (`--service-account-issuer`).
        issuer: String,
        /// Its JWKS: a URL, or discovered from `<issuer>/.well-known/openid-configuration`.
        jwks: JwksLocation,
        /// A bearer token for discovery and JWKS requests (in-cluster, the API server
        /// asks for one), read from this file at each fetch.
        bearer_token_file: Option<PathBuf>,
        /// Extra PEM trust anchors for its https URLs (the cluster's CA).
        ca_file: Option<PathBuf>,
    },
    /// A SPIFFE trust domain, whose JWT-SVID keys come from its bundle.
    Spiffe {
        /// The trust domain (`example.org`).
        trust_domain: String,
        /// Where the bundle is.
        bundle: BundleSource,
    },
}

/// Where a SPIFFE trust bundle is (SPIFFE Trust Domain and Bundle §4: a JWKS with
/// `spiffe_sequence`, JWT-SVID keys marked `use: jwt-svid`).
#[derive(Debug, Clone)]
pub enum BundleSource {
    /// A file, as a SPIRE agent writes it, re-read when its contents change.
    File(PathBuf),
    /// A bundle endpoint (`https_web` profile), fetched and cached like a JWKS.
    Endpoint(reqwest::Url),
}

/// `[client_certificates]`: who may tell us a client's certificate.
#[derive(Debug, Clone, Default)]
pub struct ClientCertificatesConfig {
    /// Peers (address, prefix length) whose `x-forwarded-client-cert` header is believed.
    pub trusted_proxies: Vec<(IpAddr, u8)>,
}

impl ClientCertificatesConfig {
    /// Whether `peer` is one of the trusted proxies.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|(net, prefix)| in_network(peer, *net, *prefix))
    }
}

/// Whether `ip` is in `net/prefix` (both of one family).
fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        (IpAddr::V6(a), IpAddr::V4(_)) => match a.to_ipv4_mapped() {
            Some(v4) => return in_network(IpAddr::V4(v4), net, prefix),
            None => return false,
        },
        _ => return false,
    };
    let shift = bits - u32::from(prefix).min(bits);
    let mask = if shift >= 128 { 0 } else { u128::MAX << shift };
    (ip & mask) == (net & mask)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkloadIssuer {
    name: String,
    kind: String,
    issuer: Option<String>,
    jwks_uri: Option<String>,
    bearer_token_file: Option<String>,
    ca_file: Option<String>,
    trust_domain: Option<String>,
    bundle_file: Option<String>,
    bundle_endpoint: Option<String>,
    audience: Option<String>,
    algorithms: Option<Vec<String>>,
    max_token_lifetime_seconds: Option<u64>,
    max_staleness_seconds: Option<u64>,
    #[serde(default)]
    allow_http: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientCertificates {
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

impl RawClientCertificates {
    pub(super) fn validate(self, cx: &mut Checker) -> Option<ClientCertificatesConfig> {
        let mut trusted_proxies = Vec::new();
        for entry in &self.trusted_proxies {
            match parse_network(entry) {
                Some(net) => trusted_proxies.push(net),
                None => {
                    cx.error(
                        "client_certificates.trusted_proxies",
                        &format!("{entry:?} is not an IP address or address/prefix"),
                    );
                    return None;
                }
            }
        }
        Some(ClientCertificatesConfig { trusted_proxies })
    }
}

/// `10.0.0.7`, `10.0.0.0/8`, `::1`, `fd00::/8`.
fn parse_network(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
        None => (entry, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then_some((ip, prefix))
}

/// Every `[[workload_issuers]]` entry; `own_issuer` is the default audience.
pub(super) fn validate(
    raw: Vec<RawWorkloadIssuer>,
    own_issuer: Option<&str>,
    cx: &mut Checker,
) -> Option<Vec<WorkloadIssuerConfig>> {
    let mut names = HashSet::new();
    let issuers: Vec<_> = raw
        .into_iter()
        .enumerate()
        .map(|(i, w)| w.validate(i, own_issuer, &mut names, cx))
        .collect();
    issuers.into_iter().collect()
}

impl RawWorkloadIssuer {
    fn validate(
        self,
        index: usize,
        own_issuer: Option<&str>,
        names: &mut HashSet<String>,
        cx: &mut Checker,
    ) -> Option<WorkloadIssuerConfig> {
        let label = if self.name.is_empty() {
            index.to_string()
        } else {
            self.name.clone()
        };
        let at = |f: &str| format!("workload_issuers[{label}].{f}");
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let name = if !name_ok {
            cx.error(&at("name"), "must be non-empty letters, digits, '-' or '_'");
            None
        } else if !names.insert(self.name.clone()) {
            cx.error(&at("name"), "duplicate workload issuer name");
            None
        } else {
            Some(self.name.clone())
        };
        let kind = match self.kind.as_str() {
            "kubernetes" => self.kubernetes(cx.base),
            "spiffe" => self.spiffe(cx.base),
            other => Err((
                "kind",
                format!("{other:?} is not one of kubernetes, spiffe"),
            )),
        };
        let kind = kind.map_err(|(f, r)| cx.error(&at(f), &r)).ok();
        let audience = match (&self.audience, own_issuer) {
            (Some(a), _) if a.is_empty() => {
                cx.error(&at("audience"), "must not be empty");
                None
            }
            (Some(a), _) => Some(a.clone()),
            (None, own) => own.map(str::to_owned),
        };
        let algorithms = cx.check(
            &at("algorithms"),
            super::issuers::algorithms(self.algorithms.clone()),
        );
        let max_token_lifetime_seconds = cx.check(
            &at("max_token_lifetime_seconds"),
            bounded(
                self.max_token_lifetime_seconds,
                DEFAULT_FEDERATED_MAX_LIFETIME,
                60,
                DEFAULT_MAX_TOKEN_LIFETIME,
            ),
        );
        let max_staleness_seconds = cx.check(
            &at("max_staleness_seconds"),
            bounded(self.max_staleness_seconds, 12 * 3600, 60, 7 * 86_400),
        );
        Some(WorkloadIssuerConfig {
            name: name?,
            kind: kind?,
            audience: audience?,
            algorithms: algorithms?,
            max_token_lifetime_seconds: max_token_lifetime_seconds?,
            max_staleness_seconds: max_staleness_seconds?,
            allow_http: self.allow_http,
        })
    }

    fn kubernetes(&self, base: &std::path::Path) -> Result<WorkloadKind, (&'static str, String)> {
        if self.trust_domain.is_some()
            || self.bundle_file.is_some()
            || self.bundle_endpoint.is_some()
        {
            return Err((
                "kind",
                "trust_domain and bundle_* are for kind = \"spiffe\"".into(),
            ));
        }
        let issuer = match &self.issuer {
            Some(i) if !i.is_empty() => i.clone(),
            _ => {
                return Err((
                    "issuer",
                    "required: the cluster's --service-account-issuer".into(),
                ));
            }
        };
        let jwks = match &self.jwks_uri {
            Some(uri) => {
                let uri = reqwest::Url::parse(uri)
                    .map_err(|e| ("jwks_uri", format!("not a URL: {e}")))?;
                if !url_allowed(&uri, self.allow_http) {
                    return Err(("jwks_uri", HTTPS_ONLY.into()));
                }
                JwksLocation::Uri(uri)
            }
            None => {
                let url = reqwest::Url::parse(&issuer).map_err(|_| {
                    (
                        "jwks_uri",
                        "required unless the issuer is a URL to discover it from".to_owned(),
                    )
                })?;
                if !url_allowed(&url, self.allow_http) {
                    return Err(("issuer", HTTPS_ONLY.into()));
                }
                JwksLocation::Discover
            }
        };
        let path = |p: &Option<String>| p.as_ref().filter(|p| !p.is_empty()).map(|p| base.join(p));
        Ok(WorkloadKind::Kubernetes {
            issuer,
            jwks,
            bearer_token_file: path(&self.bearer_token_file),
            ca_file: path(&self.ca_file),
        })
    }

    fn spiffe(&self, base: &std::path::Path) -> Result<WorkloadKind, (&'static str, String)> {
        if self.issuer.is_some() || self.jwks_uri.is_some() || self.bearer_token_file.is_some() {
            return Err((
                "kind",
                "issuer, jwks_uri and bearer_token_file are for kind = \"kubernetes\"".into(),
            ));
        }
        let trust_domain = match &self.trust_domain {
            Some(t) if !t.is_empty() && !t.contains('/') && !t.contains(':') => t.clone(),
            _ => {
                return Err((
                    "trust_domain",
                    "required: the trust domain name, e.g. example.org".into(),
                ));
            }
        };
        let bundle = match (&self.bundle_file, &self.bundle_endpoint) {
            (Some(f), None) if !f.is_empty() => BundleSource::File(base.join(f)),
            (None, Some(u)) => {
                let url = reqwest::Url::parse(u)
                    .map_err(|e| ("bundle_endpoint", format!("not a URL: {e}")))?;
                if !url_allowed(&url, self.allow_http) {
                    return Err(("bundle_endpoint", HTTPS_ONLY.into()));
                }
                BundleSource::Endpoint(url)
            }
            _ => {
                return Err((
                    "bundle_file",
                    "set exactly one of bundle_file, bundle_endpoint".into(),
                ));
            }
        };
        Ok(WorkloadKind::Spiffe {
            trust_domain,
            bundle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let config = ClientCertificatesConfig {
            trusted_proxies: ["127.0.0.1", "10.1.0.0/16", "fd00::/8"]
                .iter()
                .map(|e| parse_network(e).unwrap())
                .collect(),
        };
        for (ip, want) in [
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("10.1.200.3", true),
            ("10.2.0.1", false),
            ("fd12::1", true),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", true),
        ] {
            assert_eq!(config.trusts(ip.parse().unwrap()), want, "{ip}");
        }
        for bad in ["", "10.0.0.0/33", "::/129", "host.example", "10.0.0.0/x"] {
            assert_eq!(parse_network(bad), None, "{bad}");
        }
    }
}
