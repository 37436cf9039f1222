//! One domain's certificate over time: order when there is none, renew
//! when the CA's renewal information says so (RFC 9773) or, without it, when
//! the certificate passes `Tuning::renew_at` of its lifetime, and after a
//! failure wait with exponential backoff (never less than the server's
//! Retry-After) while the current certificate keeps serving.
//!
//! Ordering happens under the name's lock in the storage. Whoever takes it
//! first re-reads the storage (another replica may have stored a fresh
//! certificate meanwhile) and orders only if that one is missing or due;
//! the others wait for the certificate it stores, or for its lease to run
//! out if it died. While the storage is down nothing is ordered: the
//! served certificate keeps serving until it is back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::ari::{self, Plan};
use super::{AcmeError, Ctx, Stats, Tuning, lease, order, sync};
use crate::storage::{LockToken, StorageError, StoredCert, Written};
use crate::tls::files;

/// Sleeps are cut into slices this long so a wall-clock jump is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Wait after a storage error before trying again (longer while the
/// storage is known to be down: then the wait ends when it is back).
const STORAGE_RETRY: Duration = Duration::from_secs(1);

/// What a turn under the lock did.
enum Done {
    /// A new certificate was ordered and stored.
    Ordered { renewing: bool },
    /// The storage had a fresh one (another replica's): loaded instead.
    Loaded,
}

pub(super) async fn run(ctx: Arc<Ctx>, name: String) {
    let mut renewal = Renewal {
        changed: ctx.changed.subscribe(),
        ctx,
        name,
        failures: 0,
        omit_replaces: false,
        announced: None,
        waiting_logged: false,
        reported: HashSet::new(),
    };
    loop {
        renewal.turn().await;
    }
}

/// One name's renewal and what it remembers from one turn to the next.
struct Renewal {
    ctx: Arc<Ctx>,
    name: String,
    /// Names whose stored certificate changed (the sync task's news).
    changed: broadcast::Receiver<String>,
    /// Failed orders in a row.
    failures: u32,
    /// After an order that named the certificate it replaces failed, the
    /// next one does not: the CA may not know that certificate (a new CA
    /// behind the same directory, or it was already replaced).
    omit_replaces: bool,
    /// The renewal time last logged, and by what it was set.
    announced: Option<(SystemTime, &'static str)>,
    /// "Another replica holds the lock" was logged since the last turn
    /// that had it.
    waiting_logged: bool,
    /// Corrupt stored entries already reported.
    reported: HashSet<(String, String)>,
}

impl Renewal {
    /// Waits until the certificate is due (or news arrives), then orders
    /// under the name's lock unless the storage has a fresh one.
    async fn turn(&mut self) {
        let current = served(&self.ctx, &self.name);
        if current.is_none() && self.ctx.storage.shared() && !self.nothing_stored().await {
            return;
        }
        let plan = match &current {
            Some((key, validity)) => ari::plan(&self.ctx, &self.name, key, validity).await,
            None => Plan::now(),
        };
        announce(&self.ctx.stats, &self.name, &plan, &mut self.announced);
        let wake = plan.wake();
        match sleep_until(wake, &mut self.changed, &self.name).await {
            Woke::Changed | Woke::Early => return,
            Woke::At if wake < plan.at => return,
            Woke::At => {}
        }
        let Some(lock) = self.lock().await else {
            return;
        };
        self.waiting_logged = false;
        let renewing = current.is_some();
        tracing::info!(
            domain = %self.name,
            renewing,
            "took this name's lock; checking the storage, then ordering if still needed"
        );
        let replaces = plan.replaces.as_ref().filter(|_| !self.omit_replaces);
        let (ctx, name, reported) = (&self.ctx, &self.name, &mut self.reported);
        let turn = lease::hold(ctx, name, &lock, async {
            // Re-check under the lock: a replica that held it before us may
            // have stored a certificate that needs no renewal yet.
            match ctx.storage.certificate(name).await {
                Ok(Some(stored)) if fresh(ctx, &stored, current.as_ref().map(|(_, v)| v)) => {
                    // Whether this call or the sync task installs it.
                    load(ctx, name, &stored, reported);
                    return Ok(Done::Loaded);
                }
                Ok(_) => {}
                Err(StorageError::Corrupt { .. }) => {}
                Err(e) => return Err(AcmeError::Storage(e)),
            }
            let (_, _, stored) = order::issue(ctx, name, replaces).await?;
            store(ctx, name, &stored, &lock).await?;
            Ok(Done::Ordered { renewing })
        })
        .await;
        let _ = ctx.storage.unlock(name, &lock).await;
        let replaced = replaces.is_some();
        self.after(turn, renewing, replaced).await;
    }

    /// With no certificate served: loads one another replica may have
    /// stored already. False when the turn starts over (one is served now,
    /// or the storage failed and was waited for).
    async fn nothing_stored(&mut self) -> bool {
        let (ctx, name) = (&self.ctx, &self.name);
        match ctx.storage.certificate(name).await {
            Ok(Some(stored)) => {
                load(ctx, name, &stored, &mut self.reported);
                // Installed by this or by the sync task meanwhile.
                served(ctx, name).is_none()
            }
            Ok(None) => true,
            Err(e @ StorageError::Corrupt { .. }) => {
                sync::report_corrupt(ctx, name, &e, &mut self.reported);
                true
            }
            Err(e) => {
                ctx.stats.error(name, e.to_string());
                wait_for_storage(ctx).await;
                false
            }
        }
    }

    /// The name's lock; `None` after a wait when another replica holds it
    /// or the storage failed.
    async fn lock(&mut self) -> Option<LockToken> {
        let (ctx, name) = (&self.ctx, &self.name);
        match ctx.storage.try_lock(name, ctx.lease).await {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                if !self.waiting_logged {
                    self.waiting_logged = true;
                    tracing::info!(
                        domain = %name,
                        "another replica holds this name's lock; waiting for the certificate it stores"
                    );
                }
                let poll =
                    (ctx.lease / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
                let _ = wait_changed(&mut self.changed, name, poll).await;
                None
            }
            Err(e) => {
                ctx.stats.error(name, e.to_string());
                wait_for_storage(ctx).await;
                None
            }
        }
    }

    /// What follows a turn under the lock: counts, logs, and the wait
    /// before the next (a backoff after a failed order).
    async fn after(&mut self, turn: Result<Done, AcmeError>, renewing: bool, replaced: bool) {
        let (ctx, name) = (&self.ctx, &self.name);
        match turn {
            Ok(Done::Loaded) => {
                self.failures = 0;
            }
            Ok(Done::Ordered { renewing }) => {
                ctx.stats.record(true);
                self.failures = 0;
                self.omit_replaces = false;
                if let Some((_, validity)) = served(ctx, name) {
                    tracing::info!(
                        domain = %name,
                        expires = %httpdate::fmt_http_date(validity.not_after),
                        "{} certificate installed",
                        if renewing { "renewed" } else { "new" }
                    );
                    // A certificate whose renewal point has already passed
                    // (clock skew, tiny lifetimes) must not cause a tight loop.
                    if validity.at_fraction(ctx.tuning.renew_at) <= SystemTime::now() {
                        tokio::time::sleep(ctx.tuning.retry_initial).await;
                    }
                }
            }
            Err(AcmeError::Storage(e)) => {
                // Not the CA's fault: no order was counted as failed, and
                // the wait ends when the storage is back.
                tracing::debug!(domain = %name, "ACME work waits for the storage: {e}");
                ctx.stats.error(name, e.to_string());
                wait_for_storage(ctx).await;
            }
            Err(e) => {
                ctx.stats.record(false);
                ctx.stats.error(name, e.to_string());
                self.failures = self.failures.saturating_add(1);
                self.omit_replaces |= replaced;
                let wait = retry_wait(self.failures, &ctx.tuning, ctx.retry_after.peek());
                tracing::warn!(
                    domain = %name,
                    attempt = self.failures,
                    retry_in = ?wait,
                    serving_old_certificate = renewing,
                    "ACME order failed: {e}"
                );
                if e.account_gone() {
                    // The server forgot the account (a test CA restarted, or
                    // it was deactivated): register a new one next time.
                    ctx.account.lock().await.take();
                    let _ = ctx.storage.forget_account(&ctx.settings.directory).await;
                }
                let _ = wait_changed(&mut self.changed, name, wait).await;
            }
        }
    }
}

/// The served certificate of `name` and its validity.
fn served(ctx: &Ctx, name: &str) -> Option<(Arc<rustls::sign::CertifiedKey>, files::Validity)> {
    ctx.store
        .exact(name)
        .and_then(|key| files::validity(&key).ok().map(|v| (key, v)))
}

/// Whether a stored certificate makes an order unnecessary: it expires
/// later than the served one and is not due for renewal by its lifetime.
fn fresh(ctx: &Ctx, stored: &StoredCert, current: Option<&files::Validity>) -> bool {
    let now = crate::storage::unix_secs(SystemTime::now());
    if stored.not_after <= now {
        return false;
    }
    if current.is_some_and(|v| crate::storage::unix_secs(v.not_after) >= stored.not_after) {
        return false;
    }
    let Ok(key) = files::from_pem("", stored.chain.as_bytes(), stored.key.as_bytes()) else {
        return false;
    };
    files::validity(&key).is_ok_and(|v| v.at_fraction(ctx.tuning.renew_at) > SystemTime::now())
}

/// Installs a stored certificate; false (and reported) if it is unusable
/// or has expired.
fn load(
    ctx: &Ctx,
    name: &str,
    stored: &StoredCert,
    reported: &mut HashSet<(String, String)>,
) -> bool {
    if stored.not_after <= crate::storage::unix_secs(SystemTime::now()) {
        return false;
    }
    match ctx.install(name, stored, true) {
        Ok(installed) => installed,
        Err(e) => {
            let error = StorageError::Corrupt {
                what: format!("certificate for {name}"),
                reason: e.to_string(),
            };
            sync::report_corrupt(ctx, name, &error, reported);
            false
        }
    }
}

/// Stores a new certificate (fenced by `lock`) and serves it. An
/// unreachable storage is retried while the lease lasts; the certificate
/// is served meanwhile either way, since it is valid and was paid for.
async fn store(
    ctx: &Ctx,
    name: &str,
    stored: &StoredCert,
    lock: &crate::storage::LockToken,
) -> Result<(), AcmeError> {
    let deadline = tokio::time::Instant::now() + ctx.lease;
    loop {
        match ctx.storage.store_certificate(name, stored, lock).await {
            Ok(Written::Stored) => {
                ctx.install(name, stored, false)?;
                return Ok(());
            }
            Ok(Written::Older) => {
                // Someone stored one that lasts longer: serve that.
                if let Ok(Some(newer)) = ctx.storage.certificate(name).await {
                    ctx.install(name, &newer, true)?;
                }
                return Ok(());
            }
            Ok(Written::LockLost) => {
                return Err(AcmeError::LockLost {
                    name: name.to_owned(),
                });
            }
            Err(e) => {
                ctx.install(name, stored, false)?;
                if tokio::time::Instant::now() >= deadline {
                    return Err(AcmeError::Storage(e));
                }
                tokio::time::sleep(STORAGE_RETRY).await;
            }
        }
    }
}

/// Waits a moment, and while the storage is down, until it is back.
async fn wait_for_storage(ctx: &Ctx) {
    tokio::time::sleep(STORAGE_RETRY).await;
    ctx.storage.health().wait_up().await;
}

/// Why a sleep ended.
enum Woke {
    /// At the time asked for.
    At,
    /// A slice of a long sleep ended.
    Early,
    /// A certificate for this name was loaded from the storage.
    Changed,
}

/// Sleeps until `at` (in slices of [`MAX_SLEEP`]) or until a certificate
/// for `name` arrives from the storage.
async fn sleep_until(
    at: SystemTime,
    changed: &mut broadcast::Receiver<String>,
    name: &str,
) -> Woke {
    let Ok(left) = at.duration_since(SystemTime::now()) else {
        return Woke::At;
    };
    if wait_changed(changed, name, left.min(MAX_SLEEP)).await {
        return Woke::Changed;
    }
    if left > MAX_SLEEP {
        Woke::Early
    } else {
        Woke::At
    }
}

/// Waits `timeout`, or less if a certificate for `name` arrives from the
/// storage (true then).
async fn wait_changed(
    changed: &mut broadcast::Receiver<String>,
    name: &str,
    timeout: Duration,
) -> bool {
    let wait = async {
        loop {
            match changed.recv().await {
                Ok(n) if n == name => return true,
                Ok(_) => {}
                // Missed some: one of them may have been ours.
                Err(broadcast::error::RecvError::Lagged(_)) => return true,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}

/// Records, exports and logs the renewal time when it changes.
fn announce(stats: &Stats, name: &str, plan: &Plan, last: &mut Option<(SystemTime, &'static str)>) {
    let moved = last.is_none_or(|(at, source)| {
        source != plan.source
            || at
                .max(plan.at)
                .duration_since(at.min(plan.at))
                .unwrap_or_default()
                > Duration::from_secs(1)
    });
    if !moved {
        return;
    }
    *last = Some((plan.at, plan.source));
    stats.schedule(name, plan.at);
    if plan.source != "none" {
        tracing::info!(
            domain = name,
            at = %httpdate::fmt_http_date(plan.at),
            source = plan.source,
            "certificate renewal scheduled"
        );
    }
}

/// How long to wait after the `failures`-th failure in a row: the backoff,
/// or until the server's Retry-After if that is later.
fn retry_wait(failures: u32, tuning: &Tuning, retry_after: Option<SystemTime>) -> Duration {
    let wait = backoff(failures, tuning);
    retry_after.map_or(wait, |at| {
        wait.max(at.duration_since(SystemTime::now()).unwrap_or_default())
    })
}

/// `retry_initial`, doubled per further failure, capped at `retry_max`.
fn backoff(failures: u32, tuning: &Tuning) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    tuning
        .retry_initial
        .saturating_mul(1 << doublings)
        .min(tuning.retry_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let tuning = Tuning {
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            ..Tuning::default()
        };
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, &tuning).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(u32::MAX, &tuning).as_secs(), 3600);
    }

    #[test]
    fn retry_after_wins_when_it_is_later_than_the_backoff() {
        let tuning = Tuning {
            retry_initial: Duration::from_secs(1),
            ..Tuning::default()
        };
        let later = SystemTime::now() + Duration::from_secs(30);
        let wait = retry_wait(1, &tuning, Some(later));
        assert!(wait > Duration::from_secs(28) && wait <= Duration::from_secs(30));
        let past = SystemTime::now() - Duration::from_secs(30);
        assert_eq!(retry_wait(2, &tuning, Some(past)), Duration::from_secs(2));
        assert_eq!(retry_wait(3, &tuning, None), Duration::from_secs(4));
    }
}
