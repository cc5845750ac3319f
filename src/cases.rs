//! `gleipnir policy test DIR`: policy test cases, the way `opa test` runs policy tests.
//!
//! Each `*.toml` file of the directory names a configuration (whose policy files it tests)
//! and holds cases: who asks, the claims of the tokens presented, the parameters, and the
//! expected decision. Tokens are built from the claims without a signature and checked
//! offline (every check but the signature, see [`Signatures::Offline`]), then decided by
//! the real policy engine through the same dry run as `gleipnir policy explain`. The
//! format is documented in `policies/README.md`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::app::App;
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::exchange::dry_run::{Explanation, Signatures};
use crate::jose::b64_encode;
use crate::oauth::form::{FormBody, encode};
use crate::oauth::{GRANT_TYPE_TOKEN_EXCHANGE, TokenType};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// The configuration whose policies are tested, relative to the case file.
    config: PathBuf,
    /// The time the cases run at (Unix seconds); default: now.
    now: Option<u64>,
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    client: String,
    subject: TestToken,
    actor: Option<TestToken>,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    resource: Vec<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestToken {
    /// The issuer's name in the configuration (`self` for gleipnir); sets `iss` unless
    /// the claims do.
    issuer: String,
    /// Declared type: access_token (default), jwt or id_token.
    #[serde(rename = "type")]
    token_type: Option<String>,
    /// The claims; `iss`, `exp` (now + 300) and `iat` (now) are added when absent.
    claims: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `granted` or `refused`.
    decision: String,
    /// For a refusal: `stage/check`, e.g. `policy/actor_in_chain`.
    check: Option<String>,
    /// For a refusal: the OAuth `error` the client would get.
    error: Option<String>,
    /// For a grant: the issued token's `aud`, `scope` (space-separated) and `act` chain
    /// (current actor first).
    aud: Option<Vec<String>>,
    scope: Option<String>,
    act: Option<Vec<String>>,
    /// For a grant: the rule id ends with this (e.g. `#clients.bff`).
    rule: Option<String>,
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// `file: name`.
    pub name: String,
    /// Empty when it passed; what differed otherwise.
    pub failures: Vec<String>,
    /// The dry run's explanation.
    pub explanation: Vec<String>,
}

/// Runs every case file directly in `dir`, in name order. `Err` for a directory or file
/// that cannot be read or understood (not for a failing case).
pub async fn run_dir(dir: &Path) -> Result<Vec<CaseResult>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no *.toml case files", dir.display()));
    }
    let mut results = Vec::new();
    for file in files {
        results.extend(run_file(&file).await?);
    }
    Ok(results)
}

async fn run_file(path: &Path) -> Result<Vec<CaseResult>, String> {
    let at = |e: String| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let file: CaseFile = toml::from_str(&text).map_err(|e| at(e.message().to_owned()))?;
    if file.cases.is_empty() {
        return Err(at("no [[case]]".into()));
    }
    let config_path = path.parent().unwrap_or(Path::new("")).join(&file.config);
    let config = Config::load(&config_path).map_err(|e| at(e.to_string()))?;
    let now = file.now.unwrap_or_else(|| Clock::System.now());
    let app = App::build(
        &config.for_offline_dry_run(),
        Clock::from(ManualClock::new(now)),
    )
    .map_err(|e| at(e.to_string()))?
    .app;
    let mut results = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let name = format!("{}: {}", path.display(), case.name);
        let form = case_form(&app, &config, case, now).map_err(|e| format!("{name}: {e}"))?;
        let explanation = app
            .exchanger()
            .dry_run(&case.client, &form, Signatures::Offline)
            .await;
        results.push(CaseResult {
            name,
            failures: compare(&case.expect, &explanation),
            explanation: explanation.lines(),
        });
    }
    Ok(results)
}

fn case_form(app: &App, config: &Config, case: &Case, now: u64) -> Result<FormBody, String> {
    let token = |t: &TestToken, role: &str| -> Result<(String, TokenType), String> {
        let declared = match &t.token_type {
            None => TokenType::AccessToken,
            Some(name) => TokenType::from_name(name)
                .ok_or_else(|| format!("{role}.type: unknown token type {name:?}"))?,
        };
        let iss = config.issuer_iss(&t.issuer).ok_or_else(|| {
            format!(
                "{role}.issuer: no issuer {:?} in the configuration",
                t.issuer
            )
        })?;
        let mut claims = t.claims.clone();
        claims.entry("iss").or_insert_with(|| iss.into());
        claims.entry("exp").or_insert_with(|| (now + 300).into());
        claims.entry("iat").or_insert_with(|| now.into());
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or(iss);
        // A header the issuer's checks accept: its algorithm, `typ` by its profile.
        let (alg, typ) = app
            .exchanger()
            .validator()
            .unsigned_header(iss, declared)
            .unwrap_or((crate::jose::JwsAlgorithm::Es256, "JWT"));
        let header = serde_json::json!({ "alg": alg.as_str(), "typ": typ });
        let token = format!(
            "{}.{}.",
            b64_encode(header.to_string().as_bytes()),
            b64_encode(Value::Object(claims).to_string().as_bytes())
        );
        Ok((token, declared))
    };
    let (subject, subject_type) = token(&case.subject, "subject")?;
    let mut pairs = vec![
        (
            "grant_type".to_owned(),
            GRANT_TYPE_TOKEN_EXCHANGE.to_owned(),
        ),
        ("subject_token".to_owned(), subject),
        (
            "subject_token_type".to_owned(),
            subject_type.urn().to_owned(),
        ),
    ];
    if let Some(actor) = &case.actor {
        let (actor, actor_type) = token(actor, "actor")?;
        pairs.push(("actor_token".into(), actor));
        pairs.push(("actor_token_type".into(), actor_type.urn().to_owned()));
    }
    pairs.extend(case.audience.iter().map(|a| ("audience".into(), a.clone())));
    pairs.extend(case.resource.iter().map(|r| ("resource".into(), r.clone())));
    if let Some(scope) = &case.scope {
        pairs.push(("scope".into(), scope.clone()));
    }
    if let Some(t) = &case.requested_token_type {
        let t = TokenType::from_name(t)
            .ok_or_else(|| format!("requested_token_type: unknown token type {t:?}"))?;
        pairs.push(("requested_token_type".into(), t.urn().to_owned()));
    }
    form_body(&pairs)
}

/// The pairs as a form body, parsed strictly as a request's would be.
pub fn form_body(pairs: &[(String, String)]) -> Result<FormBody, String> {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    FormBody::parse(body.join("&").as_bytes()).map_err(|e| format!("parameters: {e}"))
}

fn compare(expect: &Expect, got: &Explanation) -> Vec<String> {
    let mut failures = Vec::new();
    let verdict = got.verdict();
    match (expect.decision.as_str(), &got.outcome) {
        ("granted", Ok(grant)) => {
            if let Some(aud) = &expect.aud
                && *aud != grant.aud
            {
                failures.push(format!("aud: expected {aud:?}, got {:?}", grant.aud));
            }
            if let Some(scope) = &expect.scope {
                let want: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
                if want != grant.scope {
                    failures.push(format!("scope: expected {want:?}, got {:?}", grant.scope));
                }
            }
            if let Some(act) = &expect.act
                && *act != grant.act
            {
                failures.push(format!("act: expected {act:?}, got {:?}", grant.act));
            }
            if let Some(rule) = &expect.rule
                && !grant.rule.ends_with(rule.as_str())
            {
                failures.push(format!("rule: expected …{rule}, got {}", grant.rule));
            }
        }
        ("refused", Err(_)) => {
            if let Some(check) = &expect.check
                && *check != verdict
            {
                failures.push(format!("check: expected {check}, got {verdict}"));
            }
            if let Some(error) = &expect.error {
                let code = got.wire().map(|w| w.code.as_str()).unwrap_or_default();
                if error != code {
                    failures.push(format!("error: expected {error}, got {code}"));
                }
            }
        }
        ("granted" | "refused", _) => {
            failures.push(format!("expected {}, got {verdict}", expect.decision));
        }
        (other, _) => failures.push(format!(
            "expect.decision: {other:?} is not \"granted\" or \"refused\""
        )),
    }
    failures
}
