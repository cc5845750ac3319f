//! The configuration file and the policy files: the input up to the first NUL is read as
//! a configuration, the rest as a policy compiled against a fixed valid configuration
//! (without a NUL, the whole input is tried as both).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use gleipnir::config::Config;
use gleipnir::policy::PolicyEngine;
use libfuzzer_sys::fuzz_target;

const BASE: &str = r#"
issuer = "https://sts.example"
[signing]
key_file = "signing.pem"
[[issuers]]
name = "corp"
issuer = "https://idp.example"
jwks_uri = "https://idp.example/jwks"
[[clients]]
id = "bff"
secret = { value = "fuzz-only" }
[[clients]]
id = "orders-api"
secret = { value = "fuzz-only" }
"#;

fn base() -> &'static Config {
    static BASE_CONFIG: OnceLock<Config> = OnceLock::new();
    BASE_CONFIG.get_or_init(|| {
        Config::from_toml(BASE, Path::new("/fuzz/gleipnir.toml"))
            .unwrap_or_else(|e| panic!("the fuzz target's base configuration: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config, policy) = text.split_once('\0').unwrap_or((text, text));
    let _ = Config::from_toml(config, Path::new("/fuzz/gleipnir.toml"));
    let _ = PolicyEngine::compile(base(), &[("fuzz.toml".to_owned(), policy.to_owned())]);
});
