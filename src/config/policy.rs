//! `[policy]`: where the policy files are and how often they are checked for changes.
//! The files themselves are read by `policy::file`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Checker, bounded};

const DEFAULT_POLICY_WATCH: u64 = 2;

/// Where policy files come from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// Every `*.toml` file directly in this directory.
    Dir(PathBuf),
    /// Files compiled into the binary (`gleipnir dev`): (name, text).
    Embedded(Vec<(String, String)>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    dir: Option<String>,
    watch_seconds: Option<u64>,
}

impl RawPolicy {
    /// The policy directory (default `policies`, relative to the config's directory) and
    /// its watch interval.
    pub(super) fn validate(self, cx: &mut Checker) -> Option<(PolicySource, u64)> {
        let dir = PolicySource::Dir(cx.base.join(self.dir.as_deref().unwrap_or("policies")));
        let watch_seconds = cx.check(
            "policy.watch_seconds",
            bounded(self.watch_seconds, DEFAULT_POLICY_WATCH, 0, 3600),
        );
        Some((dir, watch_seconds?))
    }
}
