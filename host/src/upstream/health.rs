//! Active health checks (`domains.X.health_check`): a GET of the configured
//! path to every backend at every interval. A backend that fails
//! `unhealthy_threshold` checks in a row is taken out of the candidates the
//! balancer sees; `healthy_threshold` passes in a row bring it back. The
//! verdict lives in the backend's shared [`BackendState`], next to its
//! breaker state, so every worker and generation sees the same answer.
//! Backends start healthy, so traffic flows before the first check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use bbproxy_config::HealthCheck;
use http::{Request, header};
use http_body_util::Empty;
use tokio::task::JoinHandle;

use super::BackendState;
use super::pool::HealthClient;

/// The health of one backend as the checks see it.
#[derive(Debug)]
pub struct HealthCell {
    healthy: AtomicBool,
    passes: AtomicU32,
    fails: AtomicU32,
}

impl Default for HealthCell {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
        }
    }
}

impl HealthCell {
    /// Whether the backend may get traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records one check; returns the new verdict when it changed.
    pub fn record(&self, passed: bool, check: &HealthCheck) -> Option<bool> {
        if passed {
            self.fails.store(0, Ordering::Release);
            let n = self.passes.fetch_add(1, Ordering::AcqRel).saturating_add(1);
            (n >= check.healthy_threshold && !self.healthy.swap(true, Ordering::AcqRel))
                .then_some(true)
        } else {
            self.passes.store(0, Ordering::Release);
            let n = self.fails.fetch_add(1, Ordering::AcqRel).saturating_add(1);
            (n >= check.unhealthy_threshold && self.healthy.swap(false, Ordering::AcqRel))
                .then_some(false)
        }
    }
}

/// The check tasks of one generation; they stop when it is dropped.
#[derive(Debug, Default)]
pub struct HealthChecks(Vec<JoinHandle<()>>);

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl HealthChecks {
    /// Starts checking `backends` of upstream `upstream` (its name is sent as
    /// `Host`) through `client`, which speaks the domain's protocol and
    /// trusts its `backend_ca`. Needs a tokio runtime; without one
    /// (`bbproxy check`) nothing starts.
    pub fn start(
        &mut self,
        upstream: &str,
        backends: &[Arc<BackendState>],
        check: &HealthCheck,
        client: HealthClient,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for backend in backends {
            let (client, backend, check) = (client.clone(), backend.clone(), check.clone());
            let host = upstream.trim_start_matches("*.").to_owned();
            let upstream = upstream.to_owned();
            self.0.push(rt.spawn(async move {
                let mut tick = tokio::time::interval(check.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let passed = probe(&client, &backend, &host, &check).await;
                    if let Some(healthy) = backend.health.record(passed, &check) {
                        if healthy {
                            tracing::info!(upstream, backend = %backend.authority, "health check: backend healthy again");
                        } else {
                            tracing::warn!(upstream, backend = %backend.authority, path = %check.path, "health check: backend unhealthy, taken out of rotation");
                        }
                        metrics::gauge!(crate::telemetry::names::BACKEND_HEALTHY, "upstream" => upstream.clone(), "backend" => backend.authority.clone())
                            .set(if healthy { 1.0 } else { 0.0 });
                    }
                }
            }));
        }
    }
}

async fn probe(
    client: &HealthClient,
    backend: &BackendState,
    host: &str,
    check: &HealthCheck,
) -> bool {
    let Ok(req) = Request::get(format!("{}{}", backend.base, check.path))
        .header(header::HOST, host)
        .header(header::USER_AGENT, "bbproxy-health-check")
        .body(Empty::new())
    else {
        return false;
    };
    match tokio::time::timeout(check.timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status();
            s.is_success() || s.is_redirection()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flip_the_verdict() {
        let check = HealthCheck {
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            ..HealthCheck::default()
        };
        let h = HealthCell::default();
        assert_eq!(h.record(false, &check), None);
        assert_eq!(h.record(false, &check), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(true, &check), None);
        assert_eq!(h.record(true, &check), Some(true));
        assert_eq!(h.record(true, &check), None);
    }
}
