//! One domain's certificate over time: order when there is none, renew
//! when the CA's renewal information says so (RFC 9773) or, without it, when
//! the certificate passes `Tuning::renew_at` of its lifetime, and after a
//! failure wait with exponential backoff (never less than the server's
//! Retry-After) while the current certificate keeps serving.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::ari::{self, Plan};
use super::{Ctx, Stats, Tuning, export_expiry, order};
use crate::tls::files;

/// Sleeps are cut into slices this long so a wall-clock jump is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

pub(super) async fn run(ctx: Arc<Ctx>, name: String) {
    let mut failures: u32 = 0;
    // After an order that named the certificate it replaces failed, the
    // next one does not: the CA may not know that certificate (a new CA
    // behind the same directory, or it was already replaced).
    let mut omit_replaces = false;
    let mut announced: Option<(SystemTime, &'static str)> = None;
    loop {
        let current = ctx
            .store
            .exact(&name)
            .and_then(|key| files::validity(&key).ok().map(|v| (key, v)));
        let plan = match &current {
            Some((key, validity)) => ari::plan(&ctx, &name, key, validity).await,
            None => Plan::now(),
        };
        announce(&ctx.stats, &name, &plan, &mut announced);
        let wake = plan.wake();
        if sleep_until(wake).await || wake < plan.at {
            // Woke early: a slice of a long sleep, or time to ask the CA's
            // renewal information again.
            continue;
        }
        let renewing = current.is_some();
        let replaces = plan.replaces.as_ref().filter(|_| !omit_replaces);
        match order::issue(&ctx, &name, replaces).await {
            Ok((key, validity)) => {
                ctx.stats.record(true);
                ctx.stats.set_error(&name, None);
                failures = 0;
                omit_replaces = false;
                export_expiry(&name, &key);
                ctx.store.insert(&name, key);
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
            Err(e) => {
                ctx.stats.record(false);
                ctx.stats.set_error(&name, Some(e.to_string()));
                failures = failures.saturating_add(1);
                omit_replaces |= replaces.is_some();
                let wait = retry_wait(failures, &ctx.tuning, ctx.retry_after.peek());
                tracing::warn!(
                    domain = %name,
                    attempt = failures,
                    retry_in = ?wait,
                    serving_old_certificate = renewing,
                    "ACME order failed: {e}"
                );
                if e.account_gone() {
                    // The server forgot the account (a test CA restarted, or
                    // it was deactivated): register a new one next time.
                    ctx.account.lock().await.take();
                    ctx.settings.cache.forget_account(&ctx.settings.directory);
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
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

/// Sleeps until `at` or for [`MAX_SLEEP`], whichever is first; true if it
/// woke before `at`.
async fn sleep_until(at: SystemTime) -> bool {
    let Ok(left) = at.duration_since(SystemTime::now()) else {
        return false;
    };
    tokio::time::sleep(left.min(MAX_SLEEP)).await;
    left > MAX_SLEEP
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
