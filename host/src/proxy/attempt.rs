//! The attempt and outcome phases: one try on one backend (its connection
//! slot, the exchange), then the breaker's verdict on how it went. The
//! response body keeps the backend's in-flight count and connection slot
//! until it ends.

use std::time::Duration;

use bbproxy_config::UpstreamLimits;
use http::{HeaderMap, Response};
use tokio::time::Instant;

use super::ProxyBody;
use super::ctx::{RequestCtx, Routed};
use super::decide;
use super::error::{ErrorKind, ProxyError};
use super::select::Picked;
use crate::clock;
use crate::generation::BackendSlot;
use crate::plugin::{Outcome, OutcomeKind};
use crate::telemetry::otel::ClientSpan;
use crate::upstream::backend_queue::Permit;
use crate::upstream::exchange::{self, Arrival, UpstreamError};
use crate::upstream::request_body::{BodySlot, RequestBody};

/// One attempt on `picked`: sends the upstream head in `ctx.head` (with
/// `headers`, its own or a copy) and `body`; reports the outcome to the
/// breaker. A response comes with the clock's reading at its head.
pub(super) async fn attempt(
    ctx: &RequestCtx<'_, '_>,
    routed: Routed<'_>,
    picked: Picked,
    headers: HeaderMap,
    slot: &BodySlot,
    body: RequestBody,
    span: &mut Option<Box<ClientSpan>>,
) -> Result<(Response<ProxyBody>, Instant), ProxyError> {
    let up = routed.slot;
    let backend = &up.backends[picked.index];
    let Some(head) = &ctx.head else {
        return Err(ErrorKind::Internal("an attempt without an upstream head").into());
    };
    let permit = admit(backend, &routed.settings.limits, picked.probe).await?;
    let guard = backend.state.start();
    let result = exchange::send(
        up.clients.get(),
        &backend.state,
        head,
        headers,
        slot,
        body,
        (&routed.settings.timeouts, ctx.splice.as_ref()),
    )
    .await;

    let outcome = outcome_of(&result, backend);
    let mut breaker_fault = None;
    if let Some(outcome) = outcome {
        if outcome.kind == OutcomeKind::Response {
            backend.state.record_latency(outcome.latency_us);
        }
        // Now, not when the request was sent: the breaker must see that
        // the backend opened meanwhile, or a late success would close it
        // before its open period ends. A response's arrival is now (read
        // when its head came in); a failure's time is read here.
        let now_ms = match &result {
            Ok((_, arrival)) => clock::ms_at(arrival.at),
            Err(_) => clock::monotonic_ms(),
        };
        let before = backend.state.snapshot(
            picked.index as u32,
            backend.weight,
            backend.state.breaker.state(now_ms),
        );
        let since = span.as_ref().map(|_| Instant::now());
        breaker_fault = decide::report_outcome(
            ctx.generation,
            &up.name,
            routed.index,
            backend,
            before,
            outcome,
            now_ms,
        )
        .err();
        if let (Some(span), Some(since)) = (span.as_mut(), since) {
            span.decision("breaker", since.elapsed());
        }
    }
    if picked.probe {
        backend.state.breaker.release_probe();
    }
    if let Some(fault) = breaker_fault {
        // Fail-closed: without a working breaker no answer goes out,
        // whatever the backend said (its body is dropped unread).
        return Err(fault);
    }
    let (resp, arrival) = result.map_err(|e| ProxyError::upstream(e, &head.method))?;
    let (parts, body) = resp.into_parts();
    let body = ProxyBody::upstream(body, (guard, permit), routed.settings.timeouts.idle);
    Ok((Response::from_parts(parts, body), arrival.at))
}

/// A connection slot of `backend` under its limits (waiting in its queue
/// when full); refused, a probe's admission is given back.
async fn admit(
    backend: &BackendSlot,
    limits: &UpstreamLimits,
    probe: bool,
) -> Result<Permit, ProxyError> {
    backend
        .state
        .queue
        .acquire(
            limits.max_connections_per_backend,
            limits.backend_queue,
            limits.backend_queue_timeout,
        )
        .await
        .map_err(|refused| {
            if probe {
                backend.state.breaker.release_probe();
            }
            ProxyError::from(ErrorKind::Overloaded {
                backend: backend.state.authority.clone(),
                refused,
            })
        })
}

/// What the breaker is told about an exchange's `result` (failures counted
/// in the backend's metrics), `None` when it says nothing about the
/// backend.
fn outcome_of<B>(
    result: &Result<(Response<B>, Arrival), UpstreamError>,
    backend: &BackendSlot,
) -> Option<Outcome> {
    match result {
        Ok((resp, arrival)) => Some(Outcome {
            kind: OutcomeKind::Response,
            status: resp.status().as_u16(),
            latency_us: micros(arrival.latency),
        }),
        Err(e) => outcome_kind(e).map(|kind| {
            match kind {
                OutcomeKind::ConnectError => backend.metrics.connect_errors.increment(1),
                OutcomeKind::Timeout => backend.metrics.timeouts.increment(1),
                OutcomeKind::Response | OutcomeKind::Reset => {}
            }
            Outcome {
                kind,
                status: 0,
                latency_us: micros(e.latency()),
            }
        }),
    }
}

/// The outcome the breaker plugin sees, or `None` when the failure says
/// nothing about the backend's health (a client's slow body, a request the
/// proxy could not express).
fn outcome_kind(e: &UpstreamError) -> Option<OutcomeKind> {
    match e {
        UpstreamError::Connect {
            timed_out: true, ..
        } => Some(OutcomeKind::Timeout),
        UpstreamError::Connect { .. } => Some(OutcomeKind::ConnectError),
        UpstreamError::Timeout { .. } => Some(OutcomeKind::Timeout),
        UpstreamError::Reset { .. } => Some(OutcomeKind::Reset),
        UpstreamError::BadRequest(_) | UpstreamError::Body(_) => None,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
