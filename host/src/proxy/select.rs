//! The select phase: which backends of the routed upstream may take the
//! request now (health check, breaker, not tried by this request yet), and
//! the balancer's pick among them.

use smallvec::SmallVec;

use super::ctx::{RequestCtx, Routed};
use super::decide;
use super::error::{ErrorKind, ProxyError};
use crate::clock;
use crate::generation::BackendSlot;
use crate::plugin::{Backend, BreakerState};
use crate::upstream::Admission;

/// Why a backend cannot take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Excluded {
    Drained,
    Open,
    ProbeBusy,
    Unhealthy,
}

impl Excluded {
    fn as_str(self) -> &'static str {
        match self {
            Excluded::Drained => "drained",
            Excluded::Open => "circuit open",
            Excluded::ProbeBusy => "half-open, probe slot taken",
            Excluded::Unhealthy => "fails its health check",
        }
    }
}

/// The backend an attempt goes to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Picked {
    /// Its index in the upstream.
    pub index: usize,
    /// Admitted as a half-open probe: its probe slot is taken and must be
    /// given back when the attempt ends.
    pub probe: bool,
}

/// Whether `b` may take a request now (half-open: a probe slot is free).
fn eligibility(b: &BackendSlot, now: u64) -> Result<(), Excluded> {
    if b.state.is_drained() {
        return Err(Excluded::Drained);
    }
    if !b.state.health.is_healthy() {
        return Err(Excluded::Unhealthy);
    }
    match b.state.breaker.admission(now) {
        Admission::Closed | Admission::Probe => Ok(()),
        Admission::Refused if b.state.breaker.state(now) == BreakerState::Open => {
            Err(Excluded::Open)
        }
        Admission::Refused => Err(Excluded::ProbeBusy),
    }
}

/// Whether a backend this request has not tried could take it now.
pub(super) fn has_untried(ctx: &RequestCtx<'_, '_>, routed: Routed<'_>) -> bool {
    let now = clock::monotonic_ms();
    routed
        .slot
        .backends
        .iter()
        .enumerate()
        .any(|(i, b)| !ctx.tried.contains(i) && eligibility(b, now).is_ok())
}

/// Picks a backend among those the breaker admits, the health checks
/// consider healthy, and this request has not tried yet. Half-open ones only
/// while a probe slot is free: picked, then the probe slot is taken for
/// real; if a concurrent request took it first, pick again without it.
///
/// With no backend left: [`ErrorKind::NoBackend`] naming each excluded
/// backend and why, or without names when every backend was already tried
/// by this request (the caller has the real failure then).
pub(super) fn choose(
    ctx: &mut RequestCtx<'_, '_>,
    routed: Routed<'_>,
) -> Result<Picked, ProxyError> {
    let up = routed.slot;
    // A retry's pick reads the clock: its attempt took a while, and a
    // breaker may have opened or its open period ended meanwhile.
    let now = if ctx.tried.len() == 0 {
        clock::ms_at(ctx.start)
    } else {
        clock::monotonic_ms()
    };
    let mut excluded: Vec<(usize, Excluded)> = Vec::new();
    // Built once, and all the loop needs: a candidate's `id` is its backend
    // index, and a half-open one was admitted only as a probe. On the stack
    // for up to four candidates: most upstreams have no more, and a pick
    // the host answers (a round-robin upstream) allocates nothing else.
    let mut stats: SmallVec<[Backend; 4]> = SmallVec::with_capacity(up.backends.len());
    for (i, b) in up.backends.iter().enumerate() {
        if ctx.tried.contains(i) {
            continue;
        }
        if let Err(why) = eligibility(b, now) {
            excluded.push((i, why));
            continue;
        }
        stats.push(
            b.state
                .snapshot(i as u32, b.weight, b.state.breaker.state(now)),
        );
    }
    loop {
        if stats.is_empty() {
            let why = (!excluded.is_empty()).then(|| {
                excluded
                    .iter()
                    .map(|&(i, why)| format!("{} {}", up.backends[i].state.authority, why.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            return Err(ErrorKind::NoBackend {
                upstream: up.name.clone(),
                why,
            }
            .into());
        }
        let chosen = decide::pick(ctx.generation, &mut ctx.view, routed.index, &stats)?;
        let index = stats[chosen].id as usize;
        let probe = stats[chosen].breaker == BreakerState::HalfOpen;
        if !probe || up.backends[index].state.breaker.try_take_probe() {
            return Ok(Picked { index, probe });
        }
        stats.remove(chosen);
        excluded.push((index, Excluded::ProbeBusy));
    }
}
