//! The fuzz targets' inputs as regression tests: every seed of `fuzz/corpus/<target>` and
//! every crash input kept in `fuzz/regressions/<target>` goes through the same parser as
//! the fuzz target (`.ci/fuzz` runs the targets themselves), and must be answered with a
//! value or an error, never a panic. The token inputs go through the real server as
//! subject tokens, so a regression is caught on the path a request takes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};

use gleipnir::config::Config;
use gleipnir::jose::{JwsAlgorithm, KeySet};
use gleipnir::oauth::form::FormBody;
use gleipnir::policy::PolicyEngine;
use gleipnir::request::TokenExchangeRequest;
use support::*;

/// Every input file of `target`: its seeds and its kept crash inputs.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if path.is_file() && !hidden {
                files.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    assert!(!files.is_empty(), "no inputs for fuzz target {target}");
    files
}

#[test]
fn form_inputs_parse_or_are_refused() {
    for (path, data) in inputs("form") {
        if let Ok(form) = FormBody::parse(&data) {
            let _ = TokenExchangeRequest::from_form(&form);
        }
        eprintln!("ok: {}", path.display());
    }
}

#[test]
fn jwks_inputs_parse_or_are_refused() {
    for (path, data) in inputs("jwks") {
        let _ = KeySet::from_jwks(&data, &JwsAlgorithm::ALL);
        eprintln!("ok: {}", path.display());
    }
}

#[test]
fn config_inputs_parse_or_are_refused() {
    let origin = Path::new("/fuzz/gleipnir.toml");
    let base = Config::from_toml(
        "issuer = \"https://sts.example\"\n[signing]\nkey_file = \"k.pem\"\n[[clients]]\nid = \"bff\"\nsecret = { value = \"test-only\" }\n",
        origin,
    )
    .unwrap();
    for (path, data) in inputs("config") {
        let text = String::from_utf8_lossy(&data);
        let (config, policy) = text.split_once('\0').unwrap_or((&text, &text));
        let _ = Config::from_toml(config, origin);
        let _ = PolicyEngine::compile(&base, &[("fuzz.toml".to_owned(), policy.to_owned())]);
        eprintln!("ok: {}", path.display());
    }
}

/// Through the real server: a hostile token is a 400 `invalid_request` (or the 401 of a
/// client that is not authenticated), never a 500 and never a dropped connection.
#[tokio::test]
async fn token_inputs_are_refused_by_the_real_server() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder().issuer("corp", &issuer, "").start().await;
    for (path, data) in inputs("jws") {
        let token = String::from_utf8_lossy(&data).into_owned();
        let response = sts.exchange(BFF, &impersonation(&token)).await;
        assert_eq!(
            response.status,
            400,
            "{}: {}",
            path.display(),
            response.body
        );
        assert_eq!(response.error(), "invalid_request", "{}", path.display());
    }
}
