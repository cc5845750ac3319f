//! `[store]`: where state shared across replicas lives (revocation lineage, rate-limit
//! counters, replay caches), and `[lifecycle]`: the admin revocation endpoint's secret.
//! Secrets (the Redis URL, its password, the seal key, the admin secret) are sources,
//! resolved by `App::build`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::secret::RawSecret;
use super::{Checker, SecretSource, bounded};

const DEFAULT_MAX_ENTRIES: usize = 1_000_000;
const DEFAULT_TIMEOUT_MS: u64 = 250;
const DEFAULT_KEY_PREFIX: &str = "gleipnir:";

/// Which backend holds the shared state.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// In this process (the default): one replica, `gleipnir dev`.
    Memory {
        /// Most live entries held; beyond, new entries are refused (never evicted).
        max_entries: usize,
    },
    /// Redis or Valkey, shared by every replica with the same URL and key prefix.
    Redis {
        /// `redis://…` or `rediss://…` (TLS); may carry a password.
        url: SecretSource,
        /// A password given apart from the URL.
        password: Option<SecretSource>,
        /// PEM certificates to trust for `rediss://` instead of the system roots.
        ca_file: Option<PathBuf>,
        /// Prefix of every key.
        key_prefix: String,
    },
}

/// What to do when the store cannot answer a revocation check or take a lineage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Refuse with 503 `temporarily_unavailable` (the default): nothing is issued or
    /// declared active that the store could not vouch for.
    FailClosed,
    /// Go on as if nothing were revoked, and issue without recording lineage.
    FailOpen,
}

/// `[store]`, validated.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The backend.
    pub backend: StoreBackend,
    /// Deadline of every store call.
    pub timeout: Duration,
    /// Revocation checks and lineage writes when the store fails.
    pub on_unavailable: OnUnavailable,
    /// The key that seals upstream tokens kept for re-introspection (at least 32 bytes);
    /// `None`: a random key per process (fine for the in-process store only).
    pub seal_key: Option<SecretSource>,
    /// The admin listener's revocation endpoint's bearer secret (`[lifecycle]`); `None`:
    /// the endpoint is absent.
    pub admin_secret: Option<SecretSource>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    backend: Option<String>,
    max_entries: Option<usize>,
    url: Option<RawSecret>,
    password: Option<RawSecret>,
    ca_file: Option<String>,
    key_prefix: Option<String>,
    timeout_ms: Option<u64>,
    on_unavailable: Option<String>,
    seal_key: Option<RawSecret>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLifecycle {
    admin_secret: Option<RawSecret>,
}

impl RawStore {
    /// The `[store]` table (and `[lifecycle]`): a known backend with the fields it needs
    /// and none it does not, bounds kept.
    pub(super) fn validate(
        mut self,
        lifecycle: RawLifecycle,
        cx: &mut Checker,
    ) -> Option<StoreConfig> {
        let timeout_ms = cx.check(
            "store.timeout_ms",
            bounded(self.timeout_ms, DEFAULT_TIMEOUT_MS, 10, 10_000),
        );
        let on_unavailable = match self.on_unavailable.as_deref() {
            None | Some("fail_closed") => Some(OnUnavailable::FailClosed),
            Some("fail_open") => Some(OnUnavailable::FailOpen),
            Some(_) => {
                cx.error(
                    "store.on_unavailable",
                    "must be \"fail_closed\" or \"fail_open\"",
                );
                None
            }
        };
        let seal_key = self
            .seal_key
            .take()
            .and_then(|s| cx.check("store.seal_key", s.validate(cx.base)));
        let admin_secret = lifecycle
            .admin_secret
            .and_then(|s| cx.check("lifecycle.admin_secret", s.validate(cx.base)));
        let backend = match self.backend.as_deref() {
            None | Some("memory") => self.memory(cx),
            Some("redis") => self.redis(cx),
            Some(_) => {
                cx.error("store.backend", "must be \"memory\" or \"redis\"");
                None
            }
        };
        Some(StoreConfig {
            backend: backend?,
            timeout: Duration::from_millis(timeout_ms?),
            on_unavailable: on_unavailable?,
            seal_key,
            admin_secret,
        })
    }

    fn memory(&self, cx: &mut Checker) -> Option<StoreBackend> {
        for (set, field) in [
            (self.url.is_some(), "store.url"),
            (self.password.is_some(), "store.password"),
            (self.ca_file.is_some(), "store.ca_file"),
            (self.key_prefix.is_some(), "store.key_prefix"),
        ] {
            if set {
                cx.error(field, "only with backend = \"redis\"");
            }
        }
        let max_entries = cx.check(
            "store.max_entries",
            bounded(self.max_entries, DEFAULT_MAX_ENTRIES, 1000, 100_000_000),
        )?;
        Some(StoreBackend::Memory { max_entries })
    }

    fn redis(self, cx: &mut Checker) -> Option<StoreBackend> {
        if self.max_entries.is_some() {
            cx.error("store.max_entries", "only with backend = \"memory\"");
        }
        let url = match self.url {
            Some(url) => cx.check("store.url", url.validate(cx.base)),
            None => {
                cx.error("store.url", "required with backend = \"redis\"");
                None
            }
        };
        let password = self
            .password
            .and_then(|p| cx.check("store.password", p.validate(cx.base)));
        let key_prefix = self
            .key_prefix
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        if key_prefix.chars().any(|c| c.is_control() || c == ' ') {
            cx.error(
                "store.key_prefix",
                "must not contain spaces or control characters",
            );
            return None;
        }
        let ca_file = match self.ca_file {
            Some(f) if f.is_empty() => {
                cx.error("store.ca_file", "must not be empty");
                return None;
            }
            Some(f) => Some(cx.base.join(f)),
            None => None,
        };
        Some(StoreBackend::Redis {
            url: url?,
            password,
            ca_file,
            key_prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "issuer = \"https://sts.example.com\"\n[signing]\nkey_file = \"k.pem\"\n";

    fn parse(tables: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(
            &format!("{BASE}{tables}"),
            Path::new("/etc/g/gleipnir.toml"),
        )
        .map_err(crate::config::ConfigErrors::into_first)
    }

    #[test]
    fn the_default_is_the_in_process_store_failing_closed() {
        let store = parse("").unwrap().store;
        assert!(matches!(
            store.backend,
            StoreBackend::Memory {
                max_entries: 1_000_000
            }
        ));
        assert_eq!(store.on_unavailable, OnUnavailable::FailClosed);
        assert_eq!(store.timeout, Duration::from_millis(250));
        assert!(store.seal_key.is_none() && store.admin_secret.is_none());
    }

    #[test]
    fn redis_takes_its_url_and_settings_from_sources() {
        let store = parse(
            "[store]\nbackend = \"redis\"\nurl = { env = \"REDIS_URL\" }\npassword = { file = \"pw\" }\nca_file = \"ca.pem\"\nkey_prefix = \"g1:\"\ntimeout_ms = 100\non_unavailable = \"fail_open\"\nseal_key = { env = \"SEAL\" }\n[lifecycle]\nadmin_secret = { file = \"admin\" }\n",
        )
        .unwrap()
        .store;
        let StoreBackend::Redis {
            url,
            password,
            ca_file,
            key_prefix,
        } = store.backend
        else {
            panic!("not redis")
        };
        assert!(matches!(url, SecretSource::Env(name) if name == "REDIS_URL"));
        assert!(matches!(password, Some(SecretSource::File(p)) if p == Path::new("/etc/g/pw")));
        assert_eq!(ca_file.as_deref(), Some(Path::new("/etc/g/ca.pem")));
        assert_eq!(key_prefix, "g1:");
        assert_eq!(store.on_unavailable, OnUnavailable::FailOpen);
        assert!(store.seal_key.is_some() && store.admin_secret.is_some());
    }

    #[test]
    fn wrong_store_settings_name_their_field() {
        for (tables, field) in [
            ("[store]\nbackend = \"etcd\"", "store.backend"),
            ("[store]\nbackend = \"redis\"", "store.url"),
            ("[store]\nurl = { value = \"redis://h\" }", "store.url"),
            (
                "[store]\nbackend = \"redis\"\nurl = { value = \"redis://h\" }\nmax_entries = 5000",
                "store.max_entries",
            ),
            ("[store]\nmax_entries = 10", "store.max_entries"),
            ("[store]\ntimeout_ms = 0", "store.timeout_ms"),
            (
                "[store]\non_unavailable = \"maybe\"",
                "store.on_unavailable",
            ),
            (
                "[store]\nbackend = \"redis\"\nurl = { value = \"redis://h\" }\nkey_prefix = \"a b\"",
                "store.key_prefix",
            ),
            ("[store]\nseal_key = {}", "store.seal_key"),
            (
                "[lifecycle]\nadmin_secret = { value = \"\" }",
                "lifecycle.admin_secret",
            ),
            ("[store]\nsurprise = 1", "toml"),
        ] {
            let e = parse(tables).unwrap_err();
            assert_eq!(e.field, field, "{tables}: {e}");
        }
    }
}
