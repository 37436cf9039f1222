//! ACME Renewal Information (RFC 9773). When the CA's directory has a
//! `renewalInfo` endpoint, the CA — not the fixed fraction of the lifetime —
//! says when to renew: it can pull renewals forward before a mass
//! revocation or spread them out to smooth its load. Without it (or when
//! the endpoint fails) renewal falls back to `Tuning::renew_at`.
//!
//! The chosen point and the next time to ask are kept in the storage, so
//! replicas sharing it agree on when to renew (and the CA is asked once per
//! `Retry-After`, not once per replica).

use std::time::{Duration, SystemTime};

use instant_acme::CertificateIdentifier;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use super::{Ctx, order};
use crate::tls::files::Validity;

/// The longest the CA's `Retry-After` may postpone the next look at the
/// window (RFC 9773 §4.3.3 asks clients to clamp it to sane bounds).
const RECHECK_MAX: Duration = Duration::from_secs(24 * 3600);

/// When to renew one certificate, and why.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Order the new certificate at this time.
    pub at: SystemTime,
    /// Ask the CA again at this time (ARI only), even if `at` is later.
    pub recheck: Option<SystemTime>,
    /// The certificate the new order replaces (ARI only; RFC 9773 §5).
    pub replaces: Option<CertificateIdentifier<'static>>,
    /// `ari` or `lifetime`, for the log.
    pub source: &'static str,
}

impl Plan {
    /// Order at once: there is no certificate to renew.
    pub fn now() -> Self {
        Self {
            at: SystemTime::now(),
            recheck: None,
            replaces: None,
            source: "none",
        }
    }

    fn lifetime(validity: &Validity, fraction: f64) -> Self {
        Self {
            at: validity.at_fraction(fraction),
            recheck: None,
            replaces: None,
            source: "lifetime",
        }
    }

    /// When the renewal loop should wake up next.
    pub fn wake(&self) -> SystemTime {
        self.recheck.map_or(self.at, |r| r.min(self.at))
    }
}

/// What the storage keeps of one certificate's renewal information.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    /// The certificate identifier (RFC 9773 §4.1) it is about.
    id: String,
    /// When to renew, Unix seconds.
    at: u64,
    /// When to ask the CA again, Unix seconds.
    recheck: u64,
}

fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// The stored plan for certificate `id`, if it is still current.
async fn stored(ctx: &Ctx, name: &str, id: &CertificateIdentifier<'static>) -> Option<Plan> {
    let json = ctx.storage.ari(name).await.ok()??;
    let stored: Stored = serde_json::from_slice(&json).ok()?;
    let recheck = from_unix(stored.recheck);
    if stored.id != id.to_string() || recheck <= SystemTime::now() {
        return None;
    }
    Some(Plan {
        at: from_unix(stored.at),
        recheck: Some(recheck),
        replaces: Some(id.clone()),
        source: "ari",
    })
}

/// The plan for `key`: the CA's suggested window if it offers one, else
/// the lifetime fraction. Never fails: ARI is advice, not a requirement.
pub(super) async fn plan(ctx: &Ctx, name: &str, key: &CertifiedKey, validity: &Validity) -> Plan {
    let fallback = Plan::lifetime(validity, ctx.tuning.renew_at);
    let Some(id) = key
        .cert
        .first()
        .and_then(|leaf| CertificateIdentifier::try_from(leaf).ok())
        .map(CertificateIdentifier::into_owned)
    else {
        // No Authority Key Identifier: the CA cannot have ARI for it.
        return fallback;
    };
    if let Some(plan) = stored(ctx, name, &id).await {
        return plan;
    }
    let account = match order::account(ctx).await {
        Ok(account) => account,
        Err(e) => {
            tracing::debug!(domain = name, "renewal information not fetched: {e}");
            return recheck_later(fallback, ctx);
        }
    };
    match account.renewal_info(&id).await {
        Ok((info, retry_after)) => {
            let start = SystemTime::from(info.suggested_window.start);
            let end = SystemTime::from(info.suggested_window.end);
            let recheck = retry_after.clamp(ctx.tuning.ari_recheck_min, RECHECK_MAX);
            let plan = Plan {
                at: pick(start, end, crate::rand::next_u64()),
                recheck: Some(SystemTime::now() + recheck),
                replaces: Some(id),
                source: "ari",
            };
            let record = Stored {
                id: plan
                    .replaces
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                at: crate::storage::unix_secs(plan.at),
                recheck: plan.recheck.map_or(0, crate::storage::unix_secs),
            };
            if let Ok(json) = serde_json::to_vec(&record) {
                // Advice only: a storage that cannot take it costs a query.
                let _ = ctx.storage.store_ari(name, &json).await;
            }
            plan
        }
        Err(instant_acme::Error::Unsupported(_)) => fallback,
        Err(e) => {
            tracing::warn!(
                domain = name,
                "ACME renewal information unavailable, renewing by lifetime for now: {e}"
            );
            recheck_later(fallback, ctx)
        }
    }
}

fn recheck_later(mut plan: Plan, ctx: &Ctx) -> Plan {
    plan.recheck = Some(SystemTime::now() + ctx.tuning.ari_recheck_min);
    plan
}

/// A uniformly spread point in `[start, end]` (RFC 9773 §4.2: clients pick
/// a random time so that renewals of many certificates do not bunch up). A
/// window that has begun means now.
fn pick(start: SystemTime, end: SystemTime, random: u64) -> SystemTime {
    let now = SystemTime::now();
    if start <= now {
        return now;
    }
    let width = end.duration_since(start).unwrap_or(Duration::ZERO);
    // 53 random bits as a fraction in [0, 1).
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    start + width.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_future_window_gives_a_point_inside_it() {
        let start = SystemTime::now() + Duration::from_secs(3600);
        let end = start + Duration::from_secs(600);
        assert_eq!(pick(start, end, 0), start);
        let last = pick(start, end, u64::MAX);
        assert!(last > start + Duration::from_secs(599) && last <= end);
        let mid = pick(start, end, 1 << 63);
        assert_eq!(mid, start + Duration::from_secs(300));
    }

    #[test]
    fn a_window_that_has_begun_means_now() {
        let start = SystemTime::now() - Duration::from_secs(60);
        let at = pick(start, start + Duration::from_secs(3600), u64::MAX);
        assert!(
            at.duration_since(SystemTime::now() - Duration::from_secs(1))
                .is_ok()
        );
        assert!(at <= SystemTime::now());
    }

    #[test]
    fn an_inverted_window_gives_its_start() {
        let start = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(
            pick(start, start - Duration::from_secs(10), u64::MAX),
            start
        );
    }
}
