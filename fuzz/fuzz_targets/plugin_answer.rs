//! Arbitrary plugin answers (routes of both contract versions, picks,
//! verdicts) through the host's contract checks: each is accepted or
//! refused with a message, never a panic, and an accepted answer is one
//! the request path can act on.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bbproxy::plugin::answer::{
    DomainRoute, RouteV1, RouteV2, check_pick, check_route_v1, check_route_v2, check_verdict,
};
use bbproxy::plugin::{BreakerState, DirectResponse, Route, Verdict};
use libfuzzer_sys::fuzz_target;

/// The upstreams' names, by number.
const KNOWN: [&str; 3] = ["example.com", "*.example.com", "[::1]"];

fn respond(u: &mut Unstructured<'_>) -> arbitrary::Result<DirectResponse> {
    Ok(DirectResponse {
        status: u16::arbitrary(u)?,
        body: String::arbitrary(u)?,
    })
}

/// A 0.1.x router's answer: an upstream's name (sometimes a known one or
/// a route reference to one, to reach the accepting branches) or a
/// direct response.
fn route_v1(u: &mut Unstructured<'_>) -> arbitrary::Result<RouteV1> {
    Ok(match u8::arbitrary(u)? % 4 {
        0 => RouteV1::Upstream(KNOWN[usize::from(u8::arbitrary(u)?) % KNOWN.len()].into()),
        1 => RouteV1::Upstream(format!(
            "{}#{}",
            KNOWN[usize::from(u8::arbitrary(u)?) % KNOWN.len()],
            String::arbitrary(u)?
        )),
        2 => RouteV1::Upstream(String::arbitrary(u)?),
        _ => RouteV1::Respond(respond(u)?),
    })
}

/// A 0.2.0 router's answer: numbers, small ones more often than not.
fn route_v2(u: &mut Unstructured<'_>) -> arbitrary::Result<RouteV2> {
    let number = |u: &mut Unstructured<'_>| -> arbitrary::Result<u32> {
        Ok(if bool::arbitrary(u)? {
            u32::from(u8::arbitrary(u)? % 5)
        } else {
            u32::arbitrary(u)?
        })
    };
    Ok(match u8::arbitrary(u)? % 3 {
        0 => RouteV2::Upstream(number(u)?),
        1 => RouteV2::DomainRoute(DomainRoute {
            domain: number(u)?,
            index: u32::arbitrary(u)?,
        }),
        _ => RouteV2::Respond(respond(u)?),
    })
}

/// What every accepted route must be: numbers of configured upstreams, a
/// direct response the proxy can send.
fn acceptable(r: &Route) {
    match r {
        Route::Upstream(n) => assert!((*n as usize) < KNOWN.len()),
        Route::DomainRoute { domain, .. } => assert!((*domain as usize) < KNOWN.len()),
        Route::Respond { status, body } => {
            assert!(http::StatusCode::from_u16(*status).is_ok());
            assert!(body.len() <= bbproxy::plugin::MAX_DIRECT_BODY_BYTES);
        }
    }
}

fn verdict(u: &mut Unstructured<'_>) -> arbitrary::Result<Verdict> {
    Ok(Verdict {
        failure: bool::arbitrary(u)?,
        state: match u8::arbitrary(u)? % 3 {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        },
        open_for_ms: u64::arbitrary(u)?,
        probes: u32::arbitrary(u)?,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let number = |name: &str| {
        KNOWN
            .iter()
            .position(|k| *k == name)
            .and_then(|i| u32::try_from(i).ok())
    };
    let Ok(r) = route_v1(&mut u) else { return };
    match check_route_v1(r, number) {
        Ok(r) => acceptable(&r),
        Err(m) => assert!(!m.is_empty()),
    }
    let Ok(r) = route_v2(&mut u) else { return };
    match check_route_v2(r, KNOWN.len()) {
        Ok(r) => acceptable(&r),
        Err(m) => assert!(!m.is_empty()),
    }
    let (Ok(choice), Ok(len)) = (Option::<u32>::arbitrary(&mut u), u16::arbitrary(&mut u)) else {
        return;
    };
    if let Ok(i) = check_pick(choice, usize::from(len)) {
        assert!(i < usize::from(len));
    }
    let Ok(v) = verdict(&mut u) else { return };
    if check_verdict(&v).is_ok() {
        assert!(v.state == BreakerState::Closed || v.probes >= 1);
    }
});
