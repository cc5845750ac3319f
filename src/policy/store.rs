//! The policy in force, and its reload.
//!
//! Requests take the current [`PolicyEngine`] (an `Arc`, cloned under a read lock held for
//! no longer than that) and decide under it to the end, so a reload never changes the
//! rules under a request in flight. A reload reads and compiles every policy file first
//! and swaps the whole engine only when all of it compiles: a bad file keeps the previous
//! policy in force, logs the error naming the file and field, and sets the
//! `gleipnir_policy_reload_failing` gauge until a later reload succeeds.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::{PolicyEngine, file};
use crate::config::{Config, ConfigError, PolicySource};
use crate::metrics::Metrics;

pub use crate::reload::Reloaded;

/// Holds the policy in force and replaces it on reload.
pub struct PolicyStore {
    current: RwLock<Arc<PolicyEngine>>,
    config: Config,
    /// SHA-256 of the files last read (in force, or refused): a watch tick that finds the
    /// same files does nothing, so a bad file is reported once, not every tick.
    seen: Mutex<[u8; 32]>,
    /// The generation of the engine in force (see [`PolicyEngine::generation`]).
    generation: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyStore")
    }
}

impl PolicyStore {
    /// Loads the policy files named by `config` (start-up: an error stops the service).
    pub fn load(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ConfigError> {
        let files = file::read(config)?;
        let engine = PolicyEngine::compile(config, &files)?;
        file::warn_unpoliced(config, &engine.clients);
        Ok(Self {
            current: RwLock::new(Arc::new(engine)),
            config: config.clone(),
            seen: Mutex::new(fingerprint(&files)),
            generation: std::sync::atomic::AtomicU64::new(0),
            metrics,
        })
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<PolicyEngine> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the policy can change at run time (files in a directory; `gleipnir dev`'s
    /// embedded policy cannot).
    pub fn reloadable(&self) -> bool {
        matches!(self.config.policy, PolicySource::Dir(_))
    }

    /// Reads and compiles the files again and puts them in force (SIGHUP). With `force`
    /// false, files identical to the last ones read are skipped (the watch).
    pub fn reload(&self, force: bool) -> Result<Reloaded, ConfigError> {
        let result = self.try_reload(force);
        match &result {
            Ok(Reloaded::Applied) => {
                self.metrics.policy_reload(true);
                tracing::info!("policy reloaded");
            }
            Ok(Reloaded::Unchanged) => {}
            Err(e) => {
                self.metrics.policy_reload(false);
                tracing::error!(error = %e, "policy reload failed: the previous policy stays in force");
            }
        }
        result
    }

    fn try_reload(&self, force: bool) -> Result<Reloaded, ConfigError> {
        if !self.reloadable() {
            return Ok(Reloaded::Unchanged);
        }
        // Held to the end: two reloads (SIGHUP and the watch) never interleave, so the
        // files last read are the ones in force (or refused).
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let files = file::read(&self.config);
        let print = match &files {
            Ok(files) => fingerprint(files),
            // The same unreadable directory is reported once, like the same bad files.
            Err(e) => crate::reload::fingerprint([e.to_string().as_bytes()]),
        };
        if !force && *seen == print {
            return Ok(Reloaded::Unchanged);
        }
        *seen = print;
        let mut engine = PolicyEngine::compile(&self.config, &files?)?;
        // Under the `seen` lock: generations are applied in the order they are counted.
        engine.generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1);
        file::warn_unpoliced(&self.config, &engine.clients);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(engine);
        Ok(Reloaded::Applied)
    }

    /// Checks the policy directory every `policy.watch_seconds` and reloads what changed.
    /// Runs until dropped; does nothing for an embedded policy or a zero interval.
    pub async fn watch(self: Arc<Self>) {
        let seconds = if self.reloadable() {
            self.config.policy_watch_seconds
        } else {
            0
        };
        crate::reload::watch(seconds, move || {
            let _ = self.reload(false);
        })
        .await;
    }
}

/// The fingerprint of the files: every name and text, in order.
fn fingerprint(files: &[(String, String)]) -> [u8; 32] {
    crate::reload::fingerprint(
        files
            .iter()
            .flat_map(|(name, text)| [name.as_bytes(), text.as_bytes()]),
    )
}
