//! One domain's certificate over time: order when there is none, renew when
//! it passes `Tuning::renew_at` of its lifetime, and after a failure wait
//! with exponential backoff (never less than the server's Retry-After)
//! while the current certificate keeps serving.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Ctx, Tuning, export_expiry, order};
use crate::tls::files;

/// Sleeps are cut into slices this long so a wall-clock jump is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

pub(super) async fn run(ctx: Arc<Ctx>, name: String) {
    let mut failures: u32 = 0;
    loop {
        let due = ctx
            .store
            .exact(&name)
            .and_then(|key| files::validity(&key).ok())
            .map_or_else(SystemTime::now, |v| v.at_fraction(ctx.tuning.renew_at));
        if sleep_until(due).await {
            continue;
        }
        let renewing = ctx.store.exact(&name).is_some();
        match order::issue(&ctx, &name).await {
            Ok((key, validity)) => {
                ctx.stats.record(true);
                failures = 0;
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
                failures = failures.saturating_add(1);
                let mut wait = backoff(failures, &ctx.tuning);
                if let Some(at) = ctx.retry_after.peek() {
                    wait = wait.max(at.duration_since(SystemTime::now()).unwrap_or_default());
                }
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
}
