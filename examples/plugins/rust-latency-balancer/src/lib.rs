//! Example balancer: the lower latency of two random choices.
//!
//! For every request it draws two distinct candidates at random (with two
//! candidates, both) and sends the request to the one whose moving average
//! of response time (`latency_ewma_us`, kept by the proxy) is lower. A
//! backend with no measurement yet (average 0) wins, so every new backend gets
//! measured. Ties go to the one with fewer requests in flight, then to a coin
//! flip.
//!
//! Two random choices rather than the global minimum: every worker of the
//! proxy decides from the same statistics at the same moment, and sending
//! all of them to the one fastest backend would overload it before its
//! average moves; two choices spread the load and still avoid the slow
//! backends almost always.
//!
//! It takes no configuration.

use bbproxy_sdk::{Backend, Balancer, Request};

/// The balancer; it keeps no state (the statistics are the proxy's).
#[derive(Debug, Default)]
pub struct LatencyBalancer;

/// Whether `a` is the better choice than `b`, or `None` on a tie.
fn better(a: &Backend, b: &Backend) -> Option<bool> {
    // An unmeasured backend (0) sorts first: it must be tried to be measured.
    let key = |x: &Backend| (x.latency_ewma_us, x.in_flight);
    match key(a).cmp(&key(b)) {
        std::cmp::Ordering::Less => Some(true),
        std::cmp::Ordering::Greater => Some(false),
        std::cmp::Ordering::Equal => None,
    }
}

/// The index (into `candidates`) of the lower-latency of two distinct
/// candidates drawn with `random`; `None` when there are no candidates.
pub fn choose(candidates: &[Backend], mut random: impl FnMut() -> u64) -> Option<usize> {
    let len = candidates.len();
    let (a, b) = match len {
        0 => return None,
        1 => return Some(0),
        2 => (0, 1),
        _ => {
            let len64 = len as u64;
            let r = random();
            let a = (r as u32 as u64 % len64) as usize;
            // An offset of 1..len from `a`, so the second draw differs.
            let b = (a + 1 + ((r >> 32) % (len64 - 1)) as usize) % len;
            (a, b)
        }
    };
    Some(match better(&candidates[a], &candidates[b]) {
        Some(true) => a,
        Some(false) => b,
        None if random() & 1 == 0 => a,
        None => b,
    })
}

impl Balancer for LatencyBalancer {
    fn pick(&mut self, _req: &Request, _upstream: u32, candidates: &[Backend]) -> Option<u32> {
        u32::try_from(choose(candidates, bbproxy_sdk::random)?).ok()
    }
}

bbproxy_sdk::export!(LatencyBalancer: balancer);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use bbproxy_sdk::Verdict;
    use bbproxy_sdk::testing::{FakeRequest, TestHost, backend, backends, record, response};

    fn with_latency(id: u32, latency_us: u64) -> Backend {
        Backend {
            latency_ewma_us: latency_us,
            ..backend(id)
        }
    }

    fn pick(host: &TestHost, lb: &mut LatencyBalancer, candidates: &[Backend]) -> usize {
        host.pick(lb, &FakeRequest::get("app.test", "/"), 0, candidates)
            .unwrap()
    }

    #[test]
    fn of_two_the_faster_always_wins() {
        let host = TestHost::new().upstream("app.test", 2);
        let mut lb: LatencyBalancer = host.balancer("{}").unwrap();
        let candidates = [with_latency(0, 90_000), with_latency(1, 2_000)];
        for _ in 0..100 {
            assert_eq!(pick(&host, &mut lb, &candidates), 1);
        }
    }

    #[test]
    fn the_pair_is_drawn_at_random_and_compared() {
        let host = TestHost::new().upstream("app.test", 4);
        let mut lb: LatencyBalancer = host.balancer("{}").unwrap();
        let candidates = [
            with_latency(0, 4_000),
            with_latency(1, 1_000),
            with_latency(2, 3_000),
            with_latency(3, 2_000),
        ];
        // Low 32 bits pick the first (index 2), high bits the offset to the
        // second: 2 + 1 + (1 % 3) = 4 -> index 0. 3 ms beats 4 ms.
        host.script_random([(1 << 32) | 2]);
        assert_eq!(pick(&host, &mut lb, &candidates), 2);
        // First 3, offset 1 + (0 % 3) -> index 0: 2 ms beats 4 ms.
        host.script_random([3]);
        assert_eq!(pick(&host, &mut lb, &candidates), 3);
    }

    #[test]
    fn the_slowest_of_many_never_wins_and_the_fastest_wins_most() {
        let host = TestHost::new().upstream("app.test", 4);
        let mut lb: LatencyBalancer = host.balancer("{}").unwrap();
        let candidates = [
            with_latency(0, 50_000),
            with_latency(1, 1_000),
            with_latency(2, 2_000),
            with_latency(3, 3_000),
        ];
        let mut counts = [0; 4];
        for _ in 0..3000 {
            counts[pick(&host, &mut lb, &candidates)] += 1;
        }
        assert_eq!(counts[0], 0, "{counts:?}");
        // Expected shares with uniform pairs: 1/2, 1/3, 1/6.
        assert!(counts[1] > counts[2] && counts[2] > counts[3], "{counts:?}");
        assert!((1300..1700).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn an_unmeasured_backend_is_tried_first() {
        let host = TestHost::new().upstream("app.test", 2);
        let mut lb: LatencyBalancer = host.balancer("{}").unwrap();
        let candidates = [with_latency(0, 1_000), with_latency(1, 0)];
        assert_eq!(pick(&host, &mut lb, &candidates), 1);
    }

    #[test]
    fn ties_go_to_fewer_in_flight_then_to_a_coin() {
        let host = TestHost::new().upstream("app.test", 2);
        let mut lb: LatencyBalancer = host.balancer("{}").unwrap();
        let busy = Backend {
            in_flight: 3,
            ..with_latency(0, 1_000)
        };
        assert_eq!(pick(&host, &mut lb, &[busy, with_latency(1, 1_000)]), 1);
        let mut counts = [0; 2];
        for _ in 0..1000 {
            counts[pick(&host, &mut lb, &backends(2))] += 1;
        }
        assert!(counts[0] > 400 && counts[1] > 400, "{counts:?}");
    }

    #[test]
    fn follows_the_latency_the_proxy_measures() {
        // Feed responses through `record`, which updates the stats as the
        // proxy does: backend 0 turns slow, and traffic moves to backend 1.
        let host = TestHost::new().upstream("app.test", 2);
        let mut lb: LatencyBalancer = host.balancer("{}").unwrap();
        let mut stats = backends(2);
        let fast = response(200, Duration::from_millis(5));
        record(&mut stats[0], &fast, &Verdict::closed(false));
        record(
            &mut stats[1],
            &response(200, Duration::from_millis(8)),
            &Verdict::closed(false),
        );
        assert_eq!(pick(&host, &mut lb, &stats), 0);
        for _ in 0..3 {
            record(
                &mut stats[0],
                &response(200, Duration::from_millis(40)),
                &Verdict::closed(false),
            );
        }
        assert!(stats[0].latency_ewma_us > stats[1].latency_ewma_us);
        assert_eq!(pick(&host, &mut lb, &stats), 1);
    }

    #[test]
    fn takes_no_config() {
        let host = TestHost::new();
        assert!(host.balancer::<LatencyBalancer>("{}").is_ok());
        assert!(host.balancer::<LatencyBalancer>(r#"{"k": 1}"#).is_err());
    }
}
