//! `[signing]`: the algorithm and where the private signing key comes from (one file, or a
//! key directory with a rotation schedule). The key itself is read by `keys::ring`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Checker, bounded};
use crate::jose::JwsAlgorithm;

const DEFAULT_PUBLISH_AHEAD: u64 = 3600;
const DEFAULT_KEY_WATCH: u64 = 2;

/// Where the signing key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A PEM file (PKCS#8; SEC1 also accepted for ES256).
    File(PathBuf),
    /// A key directory with a schedule (`keys.toml`): rotation, see `keys::ring`.
    Dir {
        /// The directory.
        path: PathBuf,
        /// How long a new key must be published before it signs (checked on reload).
        publish_ahead_seconds: u64,
        /// How often the directory is checked for changes (0: never; SIGHUP reloads).
        watch_seconds: u64,
    },
    /// A key generated at start-up and never written down. Only `gleipnir dev` uses
    /// this; a config file cannot ask for it.
    Ephemeral,
}

/// The signing key.
#[derive(Debug, Clone)]
pub struct SigningConfig {
    /// ES256 (default) or EdDSA.
    pub algorithm: JwsAlgorithm,
    /// The private key.
    pub key: KeySource,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    algorithm: Option<String>,
    key_file: Option<String>,
    key_dir: Option<String>,
    publish_ahead_seconds: Option<u64>,
    watch_seconds: Option<u64>,
}

impl RawSigning {
    /// The `[signing]` table: a supported algorithm and exactly one key source.
    pub(super) fn validate(self, cx: &mut Checker) -> Option<SigningConfig> {
        let algorithm = match self.algorithm.as_deref() {
            None | Some("ES256") => Some(JwsAlgorithm::Es256),
            Some("EdDSA") => Some(JwsAlgorithm::EdDsa),
            Some(_) => {
                cx.error("signing.algorithm", "must be ES256 or EdDSA");
                None
            }
        };
        let key = self.key_source(cx);
        Some(SigningConfig {
            algorithm: algorithm?,
            key: key?,
        })
    }

    /// `key_file` (one key) or `key_dir` (rotation, with its schedule settings).
    fn key_source(&self, cx: &mut Checker) -> Option<KeySource> {
        let rotation_only = self.publish_ahead_seconds.is_some() || self.watch_seconds.is_some();
        let (field, reason) = match (&self.key_file, &self.key_dir) {
            (Some(_), None) if rotation_only => (
                "signing.publish_ahead_seconds",
                "publish_ahead_seconds and watch_seconds go with key_dir (rotation), not key_file",
            ),
            (Some(file), None) if file.is_empty() => ("signing.key_file", "must name a PEM file"),
            (Some(file), None) => return Some(KeySource::File(cx.base.join(file))),
            (None, Some(dir)) if dir.is_empty() => ("signing.key_dir", "must name a directory"),
            (None, Some(dir)) => {
                let publish_ahead_seconds = cx.check(
                    "signing.publish_ahead_seconds",
                    bounded(
                        self.publish_ahead_seconds,
                        DEFAULT_PUBLISH_AHEAD,
                        0,
                        7 * 86_400,
                    ),
                );
                let watch_seconds = cx.check(
                    "signing.watch_seconds",
                    bounded(self.watch_seconds, DEFAULT_KEY_WATCH, 0, 3600),
                );
                return Some(KeySource::Dir {
                    path: cx.base.join(dir),
                    publish_ahead_seconds: publish_ahead_seconds?,
                    watch_seconds: watch_seconds?,
                });
            }
            (Some(_), Some(_)) => (
                "signing.key_dir",
                "give key_file (one key) or key_dir (rotation), not both",
            ),
            (None, None) => (
                "signing.key_file",
                "required: a PEM file (or key_dir for rotation)",
            ),
        };
        cx.error(field, reason);
        None
    }
}
