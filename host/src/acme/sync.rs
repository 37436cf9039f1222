//! Following a shared storage: a certificate another replica stored is
//! announced on the storage's channel and loaded here at once; every
//! `Tuning::storage_poll` (and after an outage or a lost subscription) the
//! stored versions are compared with what is served, so a missed
//! announcement costs at most one period. While the storage is down the
//! comparison runs every second, which is also what notices that it is
//! back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::Ctx;
use crate::storage::StorageError;
use crate::storage::redis::RESYNC;

/// Period of the comparison while the storage is down.
const DOWN_POLL: Duration = Duration::from_secs(1);

pub(super) async fn run(ctx: Arc<Ctx>) {
    let mut announcements = ctx.storage.watch();
    // Corrupt values already reported, so each is logged once.
    let mut reported: HashSet<(String, String)> = HashSet::new();
    let mut next = tokio::time::Instant::now();
    loop {
        let name = tokio::select! {
            () = tokio::time::sleep_until(next) => None,
            msg = async {
                match announcements.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match msg {
                Ok(name) if name != RESYNC => Some(name),
                Ok(_) | Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => {
                    announcements = None;
                    continue;
                }
            },
        };
        match name {
            Some(name) => {
                if ctx.is_wanted(&name) {
                    refresh(&ctx, &name, &mut reported).await;
                }
            }
            None => {
                compare(&ctx, &mut reported).await;
                let period = if ctx.storage.health().is_up() {
                    ctx.tuning.storage_poll
                } else {
                    DOWN_POLL
                };
                next = tokio::time::Instant::now() + period;
            }
        }
    }
}

/// Loads every wanted name whose stored version differs from the served one.
async fn compare(ctx: &Ctx, reported: &mut HashSet<(String, String)>) {
    let Ok(versions) = ctx.storage.versions().await else {
        return;
    };
    let stale: Vec<String> = {
        let loaded = ctx.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        versions
            .into_iter()
            .filter(|(name, version)| ctx.is_wanted(name) && loaded.get(name) != Some(version))
            .map(|(name, _)| name)
            .collect()
    };
    for name in stale {
        refresh(ctx, &name, reported).await;
    }
}

/// Loads the stored certificate of `name` if it is newer than the served one.
async fn refresh(ctx: &Ctx, name: &str, reported: &mut HashSet<(String, String)>) {
    let result = match ctx.storage.certificate(name).await {
        Ok(Some(cert)) => {
            ctx.install(name, &cert, true)
                .map(|_| ())
                .map_err(|e| StorageError::Corrupt {
                    what: format!("certificate for {name}"),
                    reason: e.to_string(),
                })
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e @ StorageError::Corrupt { .. }) = result {
        report_corrupt(ctx, name, &e, reported);
    }
}

/// Logs a corrupt stored certificate once per distinct error, and shows it
/// in `/status` for that name.
pub(super) fn report_corrupt(
    ctx: &Ctx,
    name: &str,
    error: &StorageError,
    reported: &mut HashSet<(String, String)>,
) {
    let message = error.to_string();
    ctx.stats.error(name, message.clone());
    if reported.insert((name.to_owned(), message.clone())) {
        tracing::warn!(
            domain = name,
            "{message}; serving what this replica has, and ordering anew when it needs one"
        );
    }
}
