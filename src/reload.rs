//! Files that change while the service runs (the policy files, the signing key directory,
//! the TLS certificate): what their reloads share. [`watch`] calls a reload every few
//! seconds on a blocking thread (file reads stay off the request workers), and
//! [`fingerprint`] gives the SHA-256 of what was read, so a reload can tell files it has
//! already seen (in force, or already refused: a bad file is reported once, not at every
//! tick) from new ones. Contents are compared, not modification times: Kubernetes updates
//! mounted ConfigMaps and Secrets by swapping a symlink.
//!
//! A supporting module: it knows no stage.

use std::time::Duration;

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// What was read is valid and now in force.
    Applied,
    /// The files are the ones last read (in force, or already refused): nothing to do.
    Unchanged,
}

/// Runs `reload` every `seconds` (not at once: start-up has just loaded the files), each
/// time on a blocking thread, until the task is dropped. Returns at once for 0.
pub async fn watch<F>(seconds: u64, reload: F)
where
    F: Fn() + Clone + Send + 'static,
{
    if seconds == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(seconds));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(reload.clone()).await;
    }
}

/// SHA-256 over `parts`, each prefixed by its length (so no two lists collide by
/// concatenation).
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    ctx.finish().as_ref().try_into().unwrap_or([0u8; 32])
}
