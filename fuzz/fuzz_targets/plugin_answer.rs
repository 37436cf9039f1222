//! Arbitrary plugin answers (routes, picks, verdicts) through the host's
//! contract checks: each is accepted or refused with a message, never a
//! panic, and an accepted answer is one the request path can act on.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bbproxy::plugin::answer::{check_pick, check_route, check_verdict};
use bbproxy::plugin::{BreakerState, DirectResponse, Route, Verdict};
use libfuzzer_sys::fuzz_target;

const KNOWN: [&str; 3] = ["example.com", "*.example.com", "[::1]"];

fn route(u: &mut Unstructured<'_>) -> arbitrary::Result<Route> {
    Ok(if bool::arbitrary(u)? {
        // Sometimes a known name, to reach the accepting branch.
        if bool::arbitrary(u)? {
            Route::Upstream(KNOWN[usize::from(u8::arbitrary(u)?) % KNOWN.len()].into())
        } else {
            Route::Upstream(String::arbitrary(u)?)
        }
    } else {
        Route::Respond(DirectResponse {
            status: u16::arbitrary(u)?,
            body: String::arbitrary(u)?,
        })
    })
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
    let Ok(r) = route(&mut u) else { return };
    match check_route(&r, |name| KNOWN.contains(&name)) {
        Ok(()) => match &r {
            Route::Upstream(name) => assert!(KNOWN.contains(&name.as_str())),
            Route::Respond(d) => {
                assert!(http::StatusCode::from_u16(d.status).is_ok());
                assert!(d.body.len() <= bbproxy::plugin::MAX_DIRECT_BODY_BYTES);
            }
        },
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
