//! The policy file format (`policies/*.toml`, documented in `policies/README.md`) and its
//! compilation into lookup tables at start-up. Nothing here runs per request.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use super::ClientPolicy;
use crate::config::{Config, ConfigError, IssuerId, PolicySource};

/// Default issued-token lifetime (EXCHANGE-RULES §5 rule 8).
pub const DEFAULT_TTL_SECONDS: u64 = 300;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyFile {
    #[serde(default)]
    clients: HashMap<String, RawClientPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientPolicy {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    impersonate: bool,
    #[serde(default)]
    delegate: bool,
    subject_issuers: Vec<String>,
    actor_issuers: Option<Vec<String>>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    default_audience: Option<String>,
    max_audiences: Option<usize>,
    #[serde(default)]
    scopes: Vec<String>,
    ttl_seconds: Option<u64>,
    max_depth: Option<usize>,
}

fn yes() -> bool {
    true
}

/// Reads every policy file and compiles the per-client table.
pub(super) fn load(config: &Config) -> Result<HashMap<String, ClientPolicy>, ConfigError> {
    let files = match &config.policy {
        PolicySource::Embedded(files) => files.clone(),
        PolicySource::Dir(dir) => read_dir(dir, &config.origin)?,
    };
    let mut table: HashMap<String, ClientPolicy> = HashMap::new();
    for (name, text) in &files {
        let raw: RawPolicyFile =
            toml::from_str(text).map_err(|e| crate::config::toml_error(name, text, &e))?;
        for (client_id, raw_policy) in raw.clients {
            let field = |f: &str| format!("clients.{client_id}.{f}");
            if let Some(existing) = table.get(&client_id) {
                return Err(ConfigError::new(
                    name,
                    format!("clients.{client_id}"),
                    format!("client already has a policy in {}", existing.source),
                ));
            }
            if !config.clients.iter().any(|c| c.id == client_id) {
                return Err(ConfigError::new(
                    name,
                    format!("clients.{client_id}"),
                    "no such client in the configuration's [[clients]]",
                ));
            }
            let policy = compile(config, name, &client_id, raw_policy)
                .map_err(|(f, reason)| ConfigError::new(name, field(f), reason))?;
            table.insert(client_id, policy);
        }
    }
    for client in &config.clients {
        if !table.contains_key(&client.id) {
            tracing::warn!(client = %client.id, "client has no policy: its exchanges will be refused (unauthorized_client)");
        }
    }
    Ok(table)
}

fn read_dir(dir: &Path, origin: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let err = |reason: String| ConfigError::new(origin, "policy.dir", reason);
    let entries =
        std::fs::read_dir(dir).map_err(|e| err(format!("cannot read {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| err(e.to_string()))?.path();
        if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
            files.push((path.display().to_string(), text));
        }
    }
    if files.is_empty() {
        return Err(err(format!("no *.toml policy files in {}", dir.display())));
    }
    files.sort();
    Ok(files)
}

fn issuer_ids(config: &Config, names: &[String]) -> Result<Vec<IssuerId>, String> {
    if names.is_empty() {
        return Err("must name at least one issuer".into());
    }
    names
        .iter()
        .map(|n| {
            config
                .issuer_id(n)
                .ok_or_else(|| format!("unknown issuer {n:?} (use a [[issuers]] name or \"self\")"))
        })
        .collect()
}

type FieldError = (&'static str, String);

fn compile(
    config: &Config,
    file: &str,
    client_id: &str,
    raw: RawClientPolicy,
) -> Result<ClientPolicy, FieldError> {
    let subject_issuers =
        issuer_ids(config, &raw.subject_issuers).map_err(|r| ("subject_issuers", r))?;
    // gleipnir's own tokens never serve as actor tokens (the policy refuses them in code);
    // naming "self" here would be a promise the code does not keep.
    let actor_issuers = match &raw.actor_issuers {
        Some(names) => {
            let ids = issuer_ids(config, names).map_err(|r| ("actor_issuers", r))?;
            if ids.contains(&IssuerId::SELF) {
                return Err((
                    "actor_issuers",
                    "\"self\" cannot issue actor tokens: a token gleipnir issued names a subject, not the party that holds it".into(),
                ));
            }
            ids
        }
        None => subject_issuers
            .iter()
            .copied()
            .filter(|i| *i != IssuerId::SELF)
            .collect(),
    };
    // An opaque token names no issuer: it goes to the one introspecting issuer the client
    // accepts for that role, never to several (which would hand a token to an issuer it
    // may not come from).
    let introspecting = |ids: &[IssuerId]| {
        ids.iter()
            .filter(|id| {
                config
                    .upstream(**id)
                    .is_some_and(|i| i.introspection.is_some())
            })
            .count()
    };
    if introspecting(&subject_issuers) > 1 {
        return Err((
            "subject_issuers",
            "at most one issuer with introspection: opaque tokens carry no issuer".into(),
        ));
    }
    if introspecting(&actor_issuers) > 1 {
        return Err((
            "actor_issuers",
            "at most one issuer with introspection: opaque tokens carry no issuer".into(),
        ));
    }
    if raw.delegate && actor_issuers.is_empty() {
        return Err((
            "actor_issuers",
            "delegate = true needs the upstream issuers of this client's actor tokens".into(),
        ));
    }
    // (An empty resource fails the URI check below, under its own field name.)
    if raw.audiences.iter().any(String::is_empty) {
        return Err(("audiences", "must not contain empty strings".into()));
    }
    if let Some(bad) = raw
        .resources
        .iter()
        .find(|r| !crate::oauth::is_resource_uri(r))
    {
        return Err((
            "resources",
            format!("{bad:?} is not an absolute URI without fragment (RFC 8707 §2)"),
        ));
    }
    if let Some(default) = &raw.default_audience
        && !raw.audiences.contains(default)
    {
        return Err(("default_audience", "must be one of audiences".into()));
    }
    if let Some(bad) = raw.scopes.iter().find(|s| !crate::oauth::is_scope_token(s)) {
        return Err((
            "scopes",
            format!("{bad:?} is not a scope token (RFC 6749 §3.3)"),
        ));
    }
    let max_audiences = raw.max_audiences.unwrap_or(1);
    if max_audiences == 0 {
        return Err(("max_audiences", "must be at least 1".into()));
    }
    let ttl_seconds = raw
        .ttl_seconds
        .unwrap_or(DEFAULT_TTL_SECONDS.min(config.tokens.max_ttl_seconds));
    if ttl_seconds == 0 || ttl_seconds > config.tokens.max_ttl_seconds {
        return Err((
            "ttl_seconds",
            format!(
                "must be between 1 and tokens.max_ttl_seconds ({})",
                config.tokens.max_ttl_seconds
            ),
        ));
    }
    let max_depth = raw.max_depth.unwrap_or(config.tokens.max_depth);
    if max_depth == 0 || max_depth > config.tokens.max_depth {
        return Err((
            "max_depth",
            format!(
                "must be between 1 and tokens.max_depth ({})",
                config.tokens.max_depth
            ),
        ));
    }
    if raw.enabled && !raw.impersonate && !raw.delegate {
        tracing::warn!(client = %client_id, file, "policy allows neither impersonate nor delegate: every exchange will be refused");
    }
    Ok(ClientPolicy {
        source: format!("{file}#clients.{client_id}").into(),
        enabled: raw.enabled,
        impersonate: raw.impersonate,
        delegate: raw.delegate,
        subject_issuers,
        actor_issuers,
        audiences: raw.audiences.into_iter().collect::<HashSet<_>>(),
        resources: raw.resources.into_iter().collect(),
        default_audience: raw.default_audience,
        max_audiences,
        scopes: raw.scopes.into_iter().collect(),
        ttl_seconds,
        max_depth,
    })
}
