//! The policy file format (`policies/*.toml`, documented in `policies/README.md`) and its
//! compilation into lookup tables. Nothing here runs per request.
//!
//! A file holds an optional `[defaults]` table (at most one across the directory) and
//! `[clients.<id>]` tables; a client table may hold `[clients.<id>.by_issuer.<issuer>]`
//! tables that refine it for subject tokens of one issuer. All three share one set of
//! fields: a client inherits every field it leaves out from `[defaults]`, and a
//! `by_issuer` table every field it leaves out from its client, except `conditions`, which
//! add up (all of them must hold). Each (client, subject issuer) pair is compiled once
//! into a [`Rule`].

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{
    ClientHeader, ClientPolicy, Condition, ConditionTest, Rule, SUBJECT_ISSUER_CLAIM, Scalar,
    SubjectNamespace, TargetSet, TokenRole,
};
use crate::config::{Config, ConfigError, IssuerId, PolicySource, SELF_ISSUER_NAME};
use crate::oauth::TokenType;
use crate::ratelimit::RateLimit;

/// Default issued-token lifetime (rule 8).
pub const DEFAULT_TTL_SECONDS: u64 = 300;

/// Claims the STS sets itself or that describe the presented token rather than its
/// subject: never copied from a subject token (rules §5, §6).
pub const RESERVED_CLAIMS: [&str; 20] = [
    "iss",
    "sub",
    SUBJECT_ISSUER_CLAIM,
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "azp",
    "scope",
    "act",
    "may_act",
    "cnf",
    "typ",
    "at_hash",
    "c_hash",
    "nonce",
    "token_type",
    "active",
];

/// The fields of `[defaults]`, `[clients.<id>]` and `[clients.<id>.by_issuer.<issuer>]`.
/// Every field is optional here; what is required, and where, is checked when compiling.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawRule {
    enabled: Option<bool>,
    impersonate: Option<bool>,
    delegate: Option<bool>,
    subject_issuers: Option<Vec<String>>,
    actor_issuers: Option<Vec<String>>,
    subject_token_types: Option<Vec<String>>,
    actor_token_types: Option<Vec<String>>,
    subject_namespace: Option<String>,
    reissue_cache: Option<bool>,
    certificate_bound: Option<bool>,
    audiences: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    default_audience: Option<String>,
    max_audiences: Option<usize>,
    scopes: Option<Vec<String>>,
    target_scopes: Option<HashMap<String, Vec<String>>>,
    ttl_seconds: Option<u64>,
    max_depth: Option<usize>,
    actors: Option<Vec<String>>,
    prior_actors: Option<Vec<String>>,
    act_includes_iss: Option<bool>,
    claims: Option<Vec<String>>,
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    conditions: Vec<RawCondition>,
    by_issuer: Option<HashMap<String, RawRule>>,
}

/// `rate_limit = { requests = 100, seconds = 60 }`.
#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests: u64,
    seconds: u64,
}

/// Longest rate-limit window, in seconds.
const MAX_RATE_WINDOW: u64 = 3600;

impl RawRateLimit {
    fn check(self) -> Result<RateLimit, FieldError> {
        if self.requests == 0 || self.requests > 1_000_000_000 {
            return Err(field_err(
                "rate_limit.requests",
                "must be between 1 and 1000000000",
            ));
        }
        if self.seconds == 0 || self.seconds > MAX_RATE_WINDOW {
            return Err(field_err(
                "rate_limit.seconds",
                format!("must be between 1 and {MAX_RATE_WINDOW}"),
            ));
        }
        Ok(RateLimit {
            requests: self.requests,
            seconds: self.seconds,
        })
    }
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    token: String,
    claim: ClaimPath,
    equals: Option<Scalar>,
    one_of: Option<Vec<Scalar>>,
    present: Option<bool>,
}

/// A claim name taken literally (`"https://example.com/tenant"` is one name), or a path
/// into nested objects (`["realm_access", "roles"]`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum ClaimPath {
    Name(String),
    Path(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyFile {
    defaults: Option<RawRule>,
    #[serde(default)]
    clients: HashMap<String, RawRule>,
}

/// Fields that only make sense for a whole client, refused in `by_issuer` tables.
const CLIENT_ONLY: [&str; 10] = [
    "enabled",
    "impersonate",
    "delegate",
    "subject_issuers",
    "subject_token_types",
    "actor_token_types",
    "subject_namespace",
    "reissue_cache",
    "certificate_bound",
    "rate_limit",
];

impl RawRule {
    /// `self` with every field it leaves out taken from `base`; conditions add up.
    fn over(&self, base: &RawRule) -> RawRule {
        macro_rules! pick {
            ($($f:ident),*) => { RawRule { $($f: self.$f.clone().or_else(|| base.$f.clone()),)*
                conditions: base.conditions.iter().chain(&self.conditions).cloned().collect(),
                by_issuer: None,
            } };
        }
        pick!(
            enabled,
            impersonate,
            delegate,
            subject_issuers,
            actor_issuers,
            subject_token_types,
            actor_token_types,
            subject_namespace,
            reissue_cache,
            certificate_bound,
            audiences,
            resources,
            default_audience,
            max_audiences,
            scopes,
            target_scopes,
            ttl_seconds,
            max_depth,
            actors,
            prior_actors,
            act_includes_iss,
            claims,
            rate_limit
        )
    }

    /// The names of the client-only fields this table sets.
    fn client_only_fields(&self) -> Vec<&'static str> {
        let set = [
            self.enabled.is_some(),
            self.impersonate.is_some(),
            self.delegate.is_some(),
            self.subject_issuers.is_some(),
            self.subject_token_types.is_some(),
            self.actor_token_types.is_some(),
            self.subject_namespace.is_some(),
            self.reissue_cache.is_some(),
            self.certificate_bound.is_some(),
            self.rate_limit.is_some(),
        ];
        CLIENT_ONLY
            .iter()
            .zip(set)
            .filter_map(|(name, set)| set.then_some(*name))
            .collect()
    }
}

/// Reads the policy files the configuration names (the directory's `*.toml` in name
/// order, or the embedded ones of `gleipnir dev`).
pub(super) fn read(config: &Config) -> Result<Vec<(String, String)>, ConfigError> {
    match &config.policy {
        PolicySource::Embedded(files) => Ok(files.clone()),
        PolicySource::Dir(dir) => read_dir(dir, &config.origin),
    }
}

/// Compiles policy files into the per-client table.
pub(super) fn compile_files(
    config: &Config,
    files: &[(String, String)],
) -> Result<HashMap<String, ClientPolicy>, ConfigError> {
    let mut parsed = Vec::with_capacity(files.len());
    let mut defaults: Option<(&str, RawRule)> = None;
    for (name, text) in files {
        let raw: RawPolicyFile =
            toml::from_str(text).map_err(|e| crate::config::toml_error(name, text, &e))?;
        if let Some(d) = raw.defaults {
            if let Some((first, _)) = &defaults {
                return Err(ConfigError::new(
                    name,
                    "defaults",
                    format!("[defaults] is already set in {first}"),
                ));
            }
            if d.by_issuer.is_some() {
                return Err(ConfigError::new(
                    name,
                    "defaults.by_issuer",
                    "by_issuer belongs in a [clients.<id>] table",
                ));
            }
            defaults = Some((name, d));
        }
        parsed.push((name, raw.clients));
    }
    let (defaults_file, defaults) = defaults.unwrap_or(("", RawRule::default()));
    // A defaults field that no client could use is still checked: compile it as a rule.
    if !defaults_file.is_empty() {
        check_defaults(config, defaults_file, &defaults)?;
    }

    let mut table: HashMap<String, ClientPolicy> = HashMap::new();
    for (file, clients) in parsed {
        let mut ids: Vec<_> = clients.into_iter().collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        for (client_id, raw) in ids {
            let rule_name = format!("clients.{client_id}");
            if let Some(existing) = table.get(&client_id) {
                return Err(ConfigError::new(
                    file.as_str(),
                    rule_name,
                    format!("client already has a policy in {}", existing.id),
                ));
            }
            if !config.clients.iter().any(|c| c.id == client_id) {
                return Err(ConfigError::new(
                    file.as_str(),
                    rule_name,
                    "no such client in the configuration's [[clients]]",
                ));
            }
            let policy = compile_client(config, file, &client_id, &raw, &defaults)?;
            table.insert(client_id, policy);
        }
    }
    Ok(table)
}

/// Warns about configured clients without a policy (their exchanges are refused).
pub(super) fn warn_unpoliced(config: &Config, table: &HashMap<String, ClientPolicy>) {
    for client in &config.clients {
        if !table.contains_key(&client.id) {
            tracing::warn!(client = %client.id, "client has no policy: its exchanges will be refused (unauthorized_client)");
        }
    }
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

/// A field's problem: (field name, reason).
type FieldError = (String, String);

fn field_err(field: &str, reason: impl Into<String>) -> FieldError {
    (field.to_owned(), reason.into())
}

fn check_defaults(config: &Config, file: &str, defaults: &RawRule) -> Result<(), ConfigError> {
    let at = |(f, reason): FieldError| ConfigError::new(file, format!("defaults.{f}"), reason);
    // Defaults name no client; check what can be checked without one.
    let mut probe = defaults.clone();
    if probe.subject_issuers.is_none() {
        probe.subject_issuers = Some(vec![SELF_ISSUER_NAME.to_owned()]);
    }
    client_header(config, &probe).map_err(at)?;
    compile_rule(config, "defaults".into(), &probe).map_err(at)?;
    Ok(())
}

fn client_header(config: &Config, raw: &RawRule) -> Result<ClientHeader, FieldError> {
    let subject_issuers = match &raw.subject_issuers {
        Some(names) => issuer_ids(config, names).map_err(|r| field_err("subject_issuers", r))?,
        None => return Err(field_err("subject_issuers", "required")),
    };
    // An opaque token names no issuer: it goes to the one introspecting issuer the client
    // accepts for that role, never to several (which would hand a token to an issuer it
    // may not come from).
    if introspecting(config, &subject_issuers) > 1 {
        return Err(field_err(
            "subject_issuers",
            "at most one issuer with introspection: opaque tokens carry no issuer",
        ));
    }
    let subject_namespace = subject_namespace(config, raw, &subject_issuers)?;
    Ok(ClientHeader {
        enabled: raw.enabled.unwrap_or(true),
        impersonate: raw.impersonate.unwrap_or(false),
        delegate: raw.delegate.unwrap_or(false),
        subject_issuers,
        subject_token_types: token_types(raw.subject_token_types.as_deref())
            .map_err(|r| field_err("subject_token_types", r))?,
        actor_token_types: token_types(raw.actor_token_types.as_deref())
            .map_err(|r| field_err("actor_token_types", r))?,
        subject_namespace,
        reissue_cache: raw.reissue_cache.unwrap_or(true),
        certificate_bound: raw.certificate_bound.unwrap_or(false),
        rate_limit: raw.rate_limit.map(RawRateLimit::check).transpose()?,
    })
}

/// `subject_namespace`, required when `subject_issuers` names two or more issuers
/// (`self` counts as one). Identity is (`iss`, `sub`), and the issued token's `iss` is
/// ours: without a namespace, `alice` at one issuer and `alice` at another would be one
/// `sub` in the tokens this client is issued, to every service that reads them.
fn subject_namespace(
    config: &Config,
    raw: &RawRule,
    subject_issuers: &[IssuerId],
) -> Result<Option<SubjectNamespace>, FieldError> {
    let namespace = match raw.subject_namespace.as_deref() {
        None => None,
        Some("issuer_claim") => Some(SubjectNamespace::IssuerClaim),
        Some(other) => {
            return Err(field_err(
                "subject_namespace",
                format!(
                    "{other:?} is not \"issuer_claim\" (the issued token names the subject's issuer in {SUBJECT_ISSUER_CLAIM})"
                ),
            ));
        }
    };
    let mut distinct: Vec<IssuerId> = Vec::new();
    for id in subject_issuers {
        if !distinct.contains(id) {
            distinct.push(*id);
        }
    }
    if namespace.is_none() && distinct.len() > 1 {
        let names: Vec<String> = distinct
            .iter()
            .map(|id| format!("{:?}", issuer_name(config, *id)))
            .collect();
        return Err(field_err(
            "subject_issuers",
            format!(
                "names {} issuers ({}): the same sub at two of them would be one subject in the issued tokens; set subject_namespace = \"issuer_claim\" (the issued token then names the subject's issuer in {SUBJECT_ISSUER_CLAIM}), or accept one issuer",
                distinct.len(),
                names.join(", ")
            ),
        ));
    }
    Ok(namespace)
}

/// The policy name of an issuer (`self` or its `[[issuers]]` name).
fn issuer_name(config: &Config, id: IssuerId) -> &str {
    config
        .upstream(id)
        .map_or(SELF_ISSUER_NAME, |i| i.name.as_str())
}

/// Compiles one client's table (`raw`, merged over `defaults`) and its `by_issuer`
/// refinements.
fn compile_client(
    config: &Config,
    file: &str,
    client_id: &str,
    raw: &RawRule,
    defaults: &RawRule,
) -> Result<ClientPolicy, ConfigError> {
    let base_name = format!("clients.{client_id}");
    let effective = raw.over(defaults);
    let header = client_header(config, &effective).map_err(at(file, &base_name))?;
    let id: Arc<str> = format!("{file}#{base_name}").into();
    let base = compile_rule(config, Arc::clone(&id), &effective)
        .and_then(|rule| delegate_has_actor_issuers(&header, rule))
        .map_err(at(file, &base_name))?;

    let mut by_issuer = HashMap::new();
    let mut overrides: Vec<_> = raw.by_issuer.iter().flatten().collect();
    overrides.sort_by(|a, b| a.0.cmp(b.0));
    for (issuer_name, over) in overrides {
        let name = format!("{base_name}.by_issuer.{issuer_name}");
        let (issuer, rule) =
            compile_override(config, file, &name, &header, &effective, issuer_name, over)?;
        by_issuer.insert(issuer, Arc::new(rule));
    }
    if header.enabled && !header.impersonate && !header.delegate {
        tracing::warn!(client = %client_id, file, "policy allows neither impersonate nor delegate: every exchange will be refused");
    }
    Ok(ClientPolicy {
        id,
        client: Arc::from(client_id),
        header,
        base: Arc::new(base),
        by_issuer,
    })
}

/// A [`FieldError`] of table `name` in `file`, as a [`ConfigError`] naming the field.
fn at(file: &str, name: &str) -> impl Fn(FieldError) -> ConfigError {
    let (file, name) = (file.to_owned(), name.to_owned());
    move |(f, reason): FieldError| ConfigError::new(file.as_str(), format!("{name}.{f}"), reason)
}

/// A client that may delegate needs issuers for its actor tokens, in every rule.
fn delegate_has_actor_issuers(header: &ClientHeader, rule: Rule) -> Result<Rule, FieldError> {
    if header.delegate && rule.actor_issuers.is_empty() {
        return Err(field_err(
            "actor_issuers",
            "delegate = true needs the upstream issuers of this client's actor tokens",
        ));
    }
    Ok(rule)
}

/// Compiles the `by_issuer` table `name` (`over`, for subject tokens of `issuer_name`)
/// over the client's effective fields.
fn compile_override(
    config: &Config,
    file: &str,
    name: &str,
    header: &ClientHeader,
    effective: &RawRule,
    issuer_name: &str,
    over: &RawRule,
) -> Result<(IssuerId, Rule), ConfigError> {
    let issuer = config
        .issuer_id(issuer_name)
        .filter(|i| header.subject_issuers.contains(i))
        .ok_or_else(|| ConfigError::new(file, name, "not one of this client's subject_issuers"))?;
    if over.by_issuer.is_some() {
        return Err(ConfigError::new(
            file,
            format!("{name}.by_issuer"),
            "by_issuer tables do not nest",
        ));
    }
    if let Some(field) = over.client_only_fields().first() {
        return Err(ConfigError::new(
            file,
            format!("{name}.{field}"),
            "set per client, not per subject issuer",
        ));
    }
    let merged = over.over(effective);
    let rule_id: Arc<str> = format!("{file}#{name}").into();
    let rule = compile_rule(config, rule_id, &merged)
        .and_then(|rule| delegate_has_actor_issuers(header, rule))
        .map_err(at(file, name))?;
    Ok((issuer, rule))
}

fn introspecting(config: &Config, ids: &[IssuerId]) -> usize {
    ids.iter()
        .filter(|id| {
            config
                .upstream(**id)
                .is_some_and(|i| i.introspection.is_some())
        })
        .count()
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

fn token_types(names: Option<&[String]>) -> Result<Option<Vec<TokenType>>, String> {
    let Some(names) = names else { return Ok(None) };
    if names.is_empty() {
        return Err("must name at least one token type".into());
    }
    names
        .iter()
        .map(|n| match TokenType::from_name(n) {
            Some(t @ (TokenType::AccessToken | TokenType::Jwt | TokenType::IdToken)) => Ok(t),
            _ => Err(format!(
                "{n:?} is not access_token, jwt or id_token (refresh and SAML tokens are never accepted)"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Compiles the effective fields `raw` (already merged with its parents) into a rule, one
/// field group after another (the first problem found is the one reported).
fn compile_rule(config: &Config, id: Arc<str>, raw: &RawRule) -> Result<Rule, FieldError> {
    let actor_issuers = actor_issuers(config, raw)?;
    let targets = target_sets(raw)?;
    let scopes =
        scope_set(raw.scopes.as_deref().unwrap_or(&[])).map_err(|r| field_err("scopes", r))?;
    let (audience_scopes, resource_scopes) = target_ceilings(raw, &targets)?;
    let max_audiences = raw.max_audiences.unwrap_or(1);
    if max_audiences == 0 {
        return Err(field_err("max_audiences", "must be at least 1"));
    }
    let ttl_seconds = ttl_seconds(config, raw)?;
    let max_depth = max_depth(config, raw)?;
    let actors = sub_set(raw.actors.as_deref()).map_err(|r| field_err("actors", r))?;
    let prior_actors =
        sub_set(raw.prior_actors.as_deref()).map_err(|r| field_err("prior_actors", r))?;
    let claims = passthrough_claims(raw)?;
    let conditions = raw
        .conditions
        .iter()
        .enumerate()
        .map(|(i, c)| compile_condition(c).map_err(|r| (format!("conditions[{i}]"), r)))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Rule {
        id,
        actor_issuers,
        audiences: targets.audience_set,
        resources: targets.resource_set,
        audience_scopes,
        resource_scopes,
        default_audience: raw.default_audience.clone(),
        max_audiences,
        scopes,
        ttl_seconds,
        max_depth,
        actors,
        prior_actors,
        act_includes_iss: raw.act_includes_iss.unwrap_or(false),
        claims,
        conditions,
    })
}

/// `actor_issuers`, by default the subject issuers other than gleipnir itself.
fn actor_issuers(config: &Config, raw: &RawRule) -> Result<Vec<IssuerId>, FieldError> {
    let subject_issuers = raw.subject_issuers.as_deref().unwrap_or(&[]);
    // gleipnir's own tokens never serve as actor tokens (the policy refuses them in code);
    // naming "self" here would be a promise the code does not keep.
    let actor_issuers = match &raw.actor_issuers {
        Some(names) => {
            let ids = issuer_ids(config, names).map_err(|r| field_err("actor_issuers", r))?;
            if ids.contains(&IssuerId::SELF) {
                return Err(field_err(
                    "actor_issuers",
                    "\"self\" cannot issue actor tokens: a token gleipnir issued names a subject, not the party that holds it",
                ));
            }
            ids
        }
        None => subject_issuers
            .iter()
            .filter_map(|n| config.issuer_id(n))
            .filter(|i| *i != IssuerId::SELF)
            .collect(),
    };
    if introspecting(config, &actor_issuers) > 1 {
        return Err(field_err(
            "actor_issuers",
            "at most one issuer with introspection: opaque tokens carry no issuer",
        ));
    }
    Ok(actor_issuers)
}

/// `audiences` and `resources` as written, and compiled.
struct TargetLists {
    audiences: Vec<String>,
    resources: Vec<String>,
    audience_set: TargetSet,
    resource_set: TargetSet,
}

/// `audiences`, `resources` and `default_audience` (one of the audiences, exactly).
fn target_sets(raw: &RawRule) -> Result<TargetLists, FieldError> {
    let audiences = raw.audiences.clone().unwrap_or_default();
    let resources = raw.resources.clone().unwrap_or_default();
    let audience_set =
        TargetSet::compile(&audiences, false).map_err(|r| field_err("audiences", r))?;
    let resource_set =
        TargetSet::compile(&resources, true).map_err(|r| field_err("resources", r))?;
    if let Some(default) = &raw.default_audience
        && !audience_set.contains_exact(default)
    {
        return Err(field_err(
            "default_audience",
            "must be one of audiences, and not a pattern",
        ));
    }
    Ok(TargetLists {
        audiences,
        resources,
        audience_set,
        resource_set,
    })
}

/// One scope ceiling slot per entry of `audiences` or of `resources`.
type Ceilings = Vec<Option<HashSet<String>>>;

/// Per-target scope ceilings (`target_scopes`), for the entries of `audiences` and of
/// `resources`, keyed by the entry as written.
fn target_ceilings(
    raw: &RawRule,
    targets: &TargetLists,
) -> Result<(Ceilings, Ceilings), FieldError> {
    let mut audience_scopes = vec![None; targets.audiences.len()];
    let mut resource_scopes = vec![None; targets.resources.len()];
    let mut keyed: Vec<_> = raw.target_scopes.iter().flatten().collect();
    keyed.sort_by(|a, b| a.0.cmp(b.0));
    for (target, list) in keyed {
        let field = format!("target_scopes.{target:?}");
        let ceiling = scope_set(list).map_err(|r| (field.clone(), r))?;
        // A value listed in both audiences and resources gets the ceiling in both: the
        // parameter it is asked for by must not matter.
        let mut found = false;
        for (entries, slots) in [
            (&targets.audiences, &mut audience_scopes),
            (&targets.resources, &mut resource_scopes),
        ] {
            if let Some(slot) = entries
                .iter()
                .position(|e| e == target)
                .and_then(|i| slots.get_mut(i))
            {
                *slot = Some(ceiling.clone());
                found = true;
            }
        }
        if !found {
            return Err((
                field,
                "not an entry of audiences or resources (write the entry exactly as listed there)"
                    .into(),
            ));
        }
    }
    Ok((audience_scopes, resource_scopes))
}

/// `ttl_seconds`, within `tokens.max_ttl_seconds` (rule 8 bounds every lifetime by it).
fn ttl_seconds(config: &Config, raw: &RawRule) -> Result<u64, FieldError> {
    let ttl_seconds = raw
        .ttl_seconds
        .unwrap_or(DEFAULT_TTL_SECONDS.min(config.tokens.max_ttl_seconds));
    if ttl_seconds == 0 || ttl_seconds > config.tokens.max_ttl_seconds {
        return Err(field_err(
            "ttl_seconds",
            format!(
                "must be between 1 and tokens.max_ttl_seconds ({})",
                config.tokens.max_ttl_seconds
            ),
        ));
    }
    Ok(ttl_seconds)
}

/// `max_depth`, within `tokens.max_depth` (rule 7).
fn max_depth(config: &Config, raw: &RawRule) -> Result<usize, FieldError> {
    let max_depth = raw.max_depth.unwrap_or(config.tokens.max_depth);
    if max_depth == 0 || max_depth > config.tokens.max_depth {
        return Err(field_err(
            "max_depth",
            format!(
                "must be between 1 and tokens.max_depth ({})",
                config.tokens.max_depth
            ),
        ));
    }
    Ok(max_depth)
}

/// `claims`: passthrough claim names, none empty, reserved or listed twice.
fn passthrough_claims(raw: &RawRule) -> Result<Vec<String>, FieldError> {
    let claims = raw.claims.clone().unwrap_or_default();
    for (i, name) in claims.iter().enumerate() {
        if name.is_empty() {
            return Err(field_err("claims", "must not contain empty names"));
        }
        if RESERVED_CLAIMS.contains(&name.as_str()) {
            return Err(field_err(
                "claims",
                format!(
                    "{name:?} is set by gleipnir or describes the presented token; it is never copied"
                ),
            ));
        }
        if claims.iter().take(i).any(|c| c == name) {
            return Err(field_err("claims", format!("{name:?} is listed twice")));
        }
    }
    Ok(claims)
}

fn scope_set(scopes: &[String]) -> Result<HashSet<String>, String> {
    if let Some(bad) = scopes.iter().find(|s| !crate::oauth::is_scope_token(s)) {
        return Err(format!("{bad:?} is not a scope token (RFC 6749 §3.3)"));
    }
    Ok(scopes.iter().cloned().collect())
}

fn sub_set(subs: Option<&[String]>) -> Result<Option<HashSet<String>>, String> {
    let Some(subs) = subs else { return Ok(None) };
    if subs.iter().any(String::is_empty) {
        return Err("must not contain empty strings".into());
    }
    Ok(Some(subs.iter().cloned().collect()))
}

fn compile_condition(raw: &RawCondition) -> Result<Condition, String> {
    let token = match raw.token.as_str() {
        "subject" => TokenRole::Subject,
        "actor" => TokenRole::Actor,
        other => return Err(format!("token: {other:?} is not \"subject\" or \"actor\"")),
    };
    let path = match &raw.claim {
        ClaimPath::Name(name) => vec![name.clone()],
        ClaimPath::Path(path) => path.clone(),
    };
    if path.is_empty() || path.iter().any(String::is_empty) {
        return Err("claim: must name a claim (a non-empty name, or a path of them)".into());
    }
    let test = match (&raw.equals, &raw.one_of, raw.present) {
        (Some(v), None, None) => ConditionTest::Equals(v.clone()),
        (None, Some(values), None) if !values.is_empty() => ConditionTest::OneOf(values.clone()),
        (None, Some(_), None) => return Err("one_of: must list at least one value".into()),
        (None, None, Some(p)) => ConditionTest::Present(p),
        _ => return Err("give exactly one of equals, one_of, present".into()),
    };
    Ok(Condition { token, path, test })
}
