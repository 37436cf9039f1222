//! BBProxy's default balancer.
//!
//! Configuration: `{}`, or what the host derives from config.json for the
//! `consistent-hash` upstreams: `{"hash": {"<upstream>": {"on":
//! "header:x-user", "backends": ["http://10.0.0.1:80", ...], "weighted":
//! false}}}` (the addresses key the hash; without them, backend positions
//! do; `weighted` says the backends' weights differ, so a pick must read
//! them, not only the candidates' ids), and for the
//! `sticky-cookie` ones: `{"sticky": {"<upstream>": {"cookie": "bb_srv",
//! "tokens": ["3f2a...", ...]}}}` (each backend's cookie value, by
//! position). Each upstream's `balancer` setting in config.json selects its
//! policy:
//!
//! - `round-robin` (the default): a shared counter per upstream, so requests
//!   spread exactly evenly over the candidates across all workers.
//! - `weighted-round-robin`: like round-robin, but each candidate gets its
//!   `weight` share of every cycle of `sum(weights)` requests, interleaved
//!   (for weights 3 and 1: A A B A).
//! - `least-request`: the power of two choices: the candidate with fewer
//!   requests in flight among two picked at random (all of them when there are
//!   only two); ties go to the lower latency average, then to a coin flip.
//! - `consistent-hash`: rendezvous hashing of the request key named by
//!   `hash_on` (see [`hash`]); the same key goes to the same backend while
//!   it is eligible, and a request without the key goes round-robin.
//! - `random`: a uniformly random candidate.
//! - `first`: the first eligible backend in configured order (active /
//!   standby).
//! - `sticky-cookie`: the candidate whose token the request's cookie
//!   carries (see [`sticky`]); without one that is a candidate, weighted
//!   round-robin (plain round-robin with equal weights).
//!   The proxy sets the cookie on the response.

pub mod hash;
pub mod sticky;

use std::collections::HashMap;

use bbproxy_sdk::serde::Deserialize;
use bbproxy_sdk::v2::{Balancer, Candidates};
use bbproxy_sdk::{Backend, Counter, Request};
use hash::HashOn;

/// The names accepted in an upstream's `balancer` setting.
pub use bbproxy_plugin_contract::balancers::BUILTIN_BALANCERS as SUPPORTED;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct Config {
    /// `consistent-hash` settings by upstream name.
    #[serde(default)]
    pub hash: HashMap<String, HashSpec>,
    /// `sticky-cookie` settings by upstream name.
    #[serde(default)]
    pub sticky: HashMap<String, sticky::StickySpec>,
}

/// One `consistent-hash` upstream's settings.
#[derive(Debug, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct HashSpec {
    /// What to hash, as in config.json's `hash_on` (default `client_ip`).
    #[serde(default)]
    pub on: Option<String>,
    /// The backends' addresses in configured order.
    #[serde(default)]
    pub backends: Vec<String>,
    /// Whether the backends' weights differ: a pick then reads every
    /// candidate (for its weight), otherwise only their ids.
    #[serde(default)]
    pub weighted: bool,
}

impl Config {
    /// Parses the JSON configuration text.
    pub fn parse(json: &str) -> Result<Config, String> {
        bbproxy_sdk::parse_config(json).map_err(|e| format!("invalid balancer config: {e}"))
    }
}

/// A load-balancing policy, as named in an upstream's `balancer` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `round-robin`.
    RoundRobin,
    /// `weighted-round-robin`.
    WeightedRoundRobin,
    /// `least-request`.
    LeastRequest,
    /// `consistent-hash`.
    ConsistentHash,
    /// `random`.
    Random,
    /// `first`.
    First,
    /// `sticky-cookie`.
    StickyCookie,
}

impl Policy {
    /// The policy for upstream `upstream`'s `balancer` setting.
    pub fn parse(upstream: &str, balancer: &str) -> Result<Policy, String> {
        match balancer {
            "round-robin" => Ok(Policy::RoundRobin),
            "weighted-round-robin" => Ok(Policy::WeightedRoundRobin),
            "least-request" => Ok(Policy::LeastRequest),
            "consistent-hash" => Ok(Policy::ConsistentHash),
            "random" => Ok(Policy::Random),
            "first" => Ok(Policy::First),
            "sticky-cookie" => Ok(Policy::StickyCookie),
            other => Err(format!(
                "upstream {upstream:?}: unknown balancer {other:?} (supported: {})",
                SUPPORTED.join(", ")
            )),
        }
    }
}

/// Round-robin: the candidate for the `n`-th request (`n` from a shared
/// counter).
pub fn round_robin(n: i64, len: usize) -> Option<usize> {
    bbproxy_plugin_contract::balancers::round_robin_turn(n, len)
}

/// Weighted round-robin: the candidate for the `n`-th request.
///
/// Every cycle of `W = sum(weights)` requests gives each candidate exactly its
/// weight. Within a cycle, candidate `i`'s `k`-th turn (`k < w_i`) is placed at
/// the virtual time `(2k + 1) / (2 w_i)` and turns are served in time order
/// (ties: lower index first), which interleaves them smoothly: weights 3 and 1
/// give A A B A, weights 5, 1, 1 give A A A B C A A. The position is computed
/// from `n` alone (no per-instance state) in O(len · log W).
///
/// Candidates with weight 0 get no turns, unless every weight is 0, which
/// degrades to plain round-robin.
pub fn weighted_round_robin(n: i64, weights: &[u32]) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return round_robin(n, weights.len());
    }
    let total_i = i64::try_from(total).ok()?;
    // Position in the cycle; turns are numbered 0..total.
    let p = u64::try_from(n.rem_euclid(total_i)).ok()?;

    // With t = x / (2W), `turns_by(x)` counts turns at virtual times <= t.
    // A turn of candidate i at (2k+1)/(2 w_i) is <= x/(2W) iff (2k+1) W <= x w_i.
    let t = u128::from(total);
    let turns_of = |w: u32, x: u128| -> u128 {
        let w = u128::from(w);
        if x * w < t {
            0
        } else {
            ((x * w - t) / (2 * t) + 1).min(w)
        }
    };
    let turns_by = |x: u128| -> u128 { weights.iter().map(|&w| turns_of(w, x)).sum() };

    // Smallest grid point x in [1, 2W] with more than p turns at or before it.
    // Every turn time is < 1 = 2W / 2W, so x = 2W always qualifies.
    let target = u128::from(p) + 1;
    let (mut lo, mut hi) = (1u128, 2 * t);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if turns_by(mid) >= target {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let x = lo;
    // Turns in ((x-1)/2W, x/2W]: at most one per candidate, because the grid
    // step 1/2W is shorter than any candidate's spacing 1/w_i >= 1/W. Order
    // them exactly by time (2k+1)/(2 w_i), then index.
    let before = turns_by(x - 1);
    let mut in_step: Vec<(u128, u128, usize)> = weights
        .iter()
        .enumerate()
        .filter(|&(_, &w)| turns_of(w, x) > turns_of(w, x - 1))
        .map(|(i, &w)| {
            let k = turns_of(w, x) - 1;
            (2 * k + 1, 2 * u128::from(w), i)
        })
        .collect();
    in_step.sort_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)).then(a.2.cmp(&b.2)));
    let rank = usize::try_from(target - before - 1).ok()?;
    in_step.get(rank).map(|&(_, _, i)| i)
}

/// Least-request (power of two choices): among two distinct candidates chosen
/// with `random` (all candidates when there are at most two), the one with
/// fewer requests in flight, then lower latency average, then a coin flip.
pub fn least_request(candidates: &[Backend], random: impl FnMut() -> u64) -> Option<usize> {
    least_request_of(candidates.len(), |i| candidates[i], random)
}

/// [`least_request`] over `len` candidates read with `get`, so a pick in
/// the proxy reads the two it compares and no others.
pub fn least_request_of(
    len: usize,
    get: impl Fn(usize) -> Backend,
    mut random: impl FnMut() -> u64,
) -> Option<usize> {
    let better = |a: usize, b: usize, random: &mut dyn FnMut() -> u64| -> usize {
        let (x, y) = (get(a), get(b));
        match (x.in_flight, x.latency_ewma_us).cmp(&(y.in_flight, y.latency_ewma_us)) {
            std::cmp::Ordering::Less => a,
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Equal => {
                if random() & 1 == 0 {
                    a
                } else {
                    b
                }
            }
        }
    };
    match len {
        0 => None,
        1 => Some(0),
        2 => Some(better(0, 1, &mut random)),
        len => {
            let len64 = len as u64;
            let r = random();
            let a = (r as u32 as u64 % len64) as usize;
            // Offset 1..len from a, so b != a.
            let b = (a + 1 + ((r >> 32) % (len64 - 1)) as usize) % len;
            Some(better(a, b, &mut random))
        }
    }
}

/// The candidates' ids without asking the host, when every one of the
/// upstream's `backends` is a candidate: the host lists candidates in
/// configured order (the contract's `candidates` interface), so candidate
/// `i` is then backend `i`. Saves the call into the host, the list it
/// copies into the plugin and its allocation, on nearly every pick (a
/// backend is left out only while it is unhealthy, its breaker open, or
/// on a retry).
fn all_ids(candidates: &Candidates, backends: u32) -> Option<std::ops::Range<u32>> {
    let len = candidates.len();
    (len == backends).then_some(0..len)
}

/// A uniformly random candidate.
pub fn random(len: usize, random: u64) -> Option<usize> {
    let len = u64::try_from(len).ok().filter(|&l| l > 0)?;
    usize::try_from(random % len).ok()
}

/// What `consistent-hash` keeps for one upstream.
#[derive(Debug)]
struct Hashed {
    on: HashOn,
    /// The request fact `on` reads, declared at init ([`hash::fact`]).
    fact: bbproxy_sdk::v2::Fact,
    /// Each backend's [`hash::point`] by position, from a hash of its
    /// address, so that a backend keeps its keys when the list around it
    /// changes.
    points: Vec<u64>,
    /// Whether the weights differ (see [`HashSpec::weighted`]).
    weighted: bool,
    /// For requests without the key.
    round_robin: Counter,
    /// How many backends the upstream has: a pick with as many candidates
    /// has them all, and needs no list of their ids (see [`all_ids`]).
    backends: u32,
}

/// The point of the backend at position `id` when its address is not
/// known.
fn position_point(id: u32) -> u64 {
    hash::point(hash::fnv1a(&id.to_le_bytes()))
}

impl Hashed {
    fn point(&self, id: u32) -> u64 {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.points.get(i).copied())
            .unwrap_or_else(|| position_point(id))
    }
}

/// What the balancer keeps per upstream.
#[derive(Debug)]
enum UpstreamPolicy {
    RoundRobin(Counter),
    WeightedRoundRobin(Counter),
    LeastRequest,
    ConsistentHash(Box<Hashed>),
    Random,
    First,
    Sticky(Box<sticky::Sticky>),
}

/// The balancer plugin.
#[derive(Debug, Default)]
pub struct DefaultBalancer {
    /// Indexed like `host::upstreams()`, i.e. by the `upstream` argument.
    upstreams: Vec<UpstreamPolicy>,
    /// The request facts the policies read (hash keys, the sticky cookie),
    /// declared at init (contract 0.2.0) so they come with each pick.
    facts: Vec<bbproxy_sdk::v2::Fact>,
}

impl UpstreamPolicy {
    /// The request fact the policy reads on every pick, if any.
    fn fact(&self) -> Option<bbproxy_sdk::v2::Fact> {
        match self {
            UpstreamPolicy::ConsistentHash(h) => Some(h.fact.clone()),
            UpstreamPolicy::Sticky(_) => Some(bbproxy_sdk::v2::Fact::header("cookie")),
            _ => None,
        }
    }
}

fn round_robin_counter(upstream: &str) -> Counter {
    Counter::new(&format!("bbproxy.balancer.rr.{upstream}"))
}

impl Balancer for DefaultBalancer {
    fn init(config: &str) -> Result<Self, String> {
        let mut config = Config::parse(config)?;
        let upstreams = bbproxy_sdk::upstreams()
            .into_iter()
            .map(|u| {
                Ok(match Policy::parse(&u.name, &u.balancer)? {
                    Policy::RoundRobin => UpstreamPolicy::RoundRobin(round_robin_counter(&u.name)),
                    Policy::WeightedRoundRobin => UpstreamPolicy::WeightedRoundRobin(Counter::new(
                        &format!("bbproxy.balancer.wrr.{}", u.name),
                    )),
                    Policy::LeastRequest => UpstreamPolicy::LeastRequest,
                    Policy::ConsistentHash => {
                        let spec = config.hash.remove(&u.name);
                        let on = match spec.as_ref().and_then(|s| s.on.as_deref()) {
                            Some(on) => HashOn::parse(on).map_err(|e| {
                                format!("upstream {:?}: unknown hash_on {on:?} ({e})", u.name)
                            })?,
                            None => HashOn::ClientIp,
                        };
                        let weighted = spec.as_ref().is_some_and(|s| s.weighted);
                        // Without the addresses (a host that passes none),
                        // a backend's identity is its position.
                        let points = match spec {
                            Some(s) => s
                                .backends
                                .iter()
                                .map(|a| hash::point(hash::fnv1a(a.as_bytes())))
                                .collect(),
                            None => (0..u.backends).map(position_point).collect(),
                        };
                        UpstreamPolicy::ConsistentHash(Box::new(Hashed {
                            fact: hash::fact(&on),
                            on,
                            points,
                            weighted,
                            round_robin: round_robin_counter(&u.name),
                            backends: u.backends,
                        }))
                    }
                    Policy::Random => UpstreamPolicy::Random,
                    Policy::First => UpstreamPolicy::First,
                    Policy::StickyCookie => {
                        let spec = config.sticky.remove(&u.name).ok_or_else(|| {
                            format!(
                                "upstream {:?}: sticky-cookie needs its cookie and backend tokens in the config's \"sticky\" (the proxy passes them)",
                                u.name
                            )
                        })?;
                        UpstreamPolicy::Sticky(Box::new(
                            sticky::Sticky::new(spec, u.backends, round_robin_counter(&u.name))
                                .map_err(|e| format!("upstream {:?}: {e}", u.name))?,
                        ))
                    }
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut facts = Vec::new();
        for fact in upstreams.iter().filter_map(UpstreamPolicy::fact) {
            if !facts.contains(&fact) && facts.len() < bbproxy_sdk::v2::MAX_FACTS {
                facts.push(fact);
            }
        }
        Ok(DefaultBalancer { upstreams, facts })
    }

    fn facts(&self) -> Vec<bbproxy_sdk::v2::Fact> {
        self.facts.clone()
    }

    /// The `round-robin` upstreams: their picks read nothing but the
    /// counter and the candidates' number, so the proxy takes their turns
    /// itself (over the same counter) without calling `pick`.
    fn round_robin_upstreams(&self) -> Vec<(u32, &Counter)> {
        self.upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, policy)| match policy {
                UpstreamPolicy::RoundRobin(turns) => Some((u32::try_from(i).ok()?, turns)),
                _ => None,
            })
            .collect()
    }

    /// Reads only what the upstream's policy needs of the candidates:
    /// round-robin and random their number, least-request the two it
    /// compares, the others the whole list.
    fn pick(&mut self, req: &Request, upstream: u32, candidates: &Candidates) -> Option<u32> {
        let policy = self.upstreams.get(usize::try_from(upstream).ok()?)?;
        let len = candidates.len() as usize;
        let index = match policy {
            UpstreamPolicy::RoundRobin(counter) => round_robin(counter.fetch_add(1), len),
            UpstreamPolicy::WeightedRoundRobin(counter) => {
                let weights: Vec<u32> = candidates.all().iter().map(|b| b.weight).collect();
                weighted_round_robin(counter.fetch_add(1), &weights)
            }
            UpstreamPolicy::LeastRequest => {
                least_request_of(len, |i| candidates.get(i as u32), bbproxy_sdk::random)
            }
            UpstreamPolicy::ConsistentHash(h) => match hash::key(&h.on, &h.fact, req) {
                Some(key) => {
                    let key = hash::fnv1a(key.as_bytes());
                    let point = |id| h.point(id);
                    if h.weighted {
                        hash::pick(key, &candidates.all(), point)
                    } else {
                        match all_ids(candidates, h.backends) {
                            Some(ids) => hash::pick_unweighted(key, ids, point),
                            None => hash::pick_unweighted(key, candidates.ids(), point),
                        }
                    }
                }
                None => round_robin(h.round_robin.fetch_add(1), len),
            },
            UpstreamPolicy::Random => random(len, bbproxy_sdk::random()),
            // The earliest in configured order: the host lists candidates in
            // that order (the contract's `candidates` interface).
            UpstreamPolicy::First => Some(0),
            UpstreamPolicy::Sticky(s) => s.pick(req, &candidates.all()),
        }?;
        u32::try_from(index).ok()
    }
}

bbproxy_sdk::v2::export!(DefaultBalancer: balancer);

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: u32, in_flight: u32, latency: u64) -> Backend {
        Backend {
            in_flight,
            latency_ewma_us: latency,
            ..bbproxy_sdk::testing::backend(id)
        }
    }

    fn counts(len: usize, picks: impl Iterator<Item = usize>) -> Vec<usize> {
        let mut counts = vec![0; len];
        for i in picks {
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_exactly_even() {
        assert_eq!(
            counts(3, (0..300).map(|n| round_robin(n, 3).unwrap())),
            [100, 100, 100]
        );
        let order: Vec<_> = (0..6).map(|n| round_robin(n, 3).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_edge_cases() {
        assert_eq!(round_robin(5, 0), None);
        assert_eq!(round_robin(-1, 3), Some(2));
        assert_eq!(round_robin(i64::MAX, 1), Some(0));
    }

    fn wrr_sequence(weights: &[u32]) -> Vec<usize> {
        let total: u32 = weights.iter().sum();
        (0..i64::from(total))
            .map(|n| weighted_round_robin(n, weights).unwrap())
            .collect()
    }

    #[test]
    fn weighted_exact_shares() {
        assert_eq!(
            counts(
                2,
                (0..400).map(|n| weighted_round_robin(n, &[3, 1]).unwrap())
            ),
            [300, 100]
        );
        assert_eq!(
            counts(
                3,
                (0..1000).map(|n| weighted_round_robin(n, &[5, 3, 2]).unwrap())
            ),
            [500, 300, 200]
        );
    }

    #[test]
    fn weighted_interleaves() {
        assert_eq!(wrr_sequence(&[3, 1]), [0, 0, 1, 0]);
        assert_eq!(wrr_sequence(&[5, 1, 1]), [0, 0, 0, 1, 2, 0, 0]);
        assert_eq!(wrr_sequence(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(wrr_sequence(&[2, 3]), [1, 0, 1, 0, 1]);
    }

    #[test]
    fn weighted_each_cycle_exact_for_many_weights() {
        for weights in [
            vec![1u32],
            vec![7, 3],
            vec![4, 4, 4],
            vec![10, 1, 0, 6],
            vec![13, 17, 19, 23],
        ] {
            let total: u32 = weights.iter().sum();
            let seq = wrr_sequence(&weights);
            let got = counts(weights.len(), seq.into_iter());
            let want: Vec<usize> = weights.iter().map(|&w| w as usize).collect();
            assert_eq!(got, want, "weights {weights:?} total {total}");
        }
    }

    #[test]
    fn weighted_large_weights_and_counters() {
        let weights = [u32::MAX, 1];
        assert_eq!(weighted_round_robin(0, &weights), Some(0));
        assert_eq!(weighted_round_robin(-1, &weights), Some(0));
        assert!(weighted_round_robin(i64::MAX, &weights).is_some());
        // The single turn of the weight-1 candidate is in the middle.
        assert_eq!(weighted_round_robin(1 << 31, &weights), Some(1));
    }

    #[test]
    fn weighted_zero_weights() {
        assert_eq!(wrr_sequence(&[0, 2]), [1, 1]);
        // All zero: plain round-robin.
        let seq: Vec<_> = (0..4)
            .map(|n| weighted_round_robin(n, &[0, 0]).unwrap())
            .collect();
        assert_eq!(seq, [0, 1, 0, 1]);
        assert_eq!(weighted_round_robin(0, &[]), None);
    }

    /// A deterministic `random()` for tests.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn least_request_two_compares_both() {
        let c = [backend(0, 5, 0), backend(1, 2, 0)];
        assert_eq!(least_request(&c, rng(1)), Some(1));
        let c = [backend(0, 2, 100), backend(1, 2, 900)];
        assert_eq!(least_request(&c, rng(1)), Some(0));
        assert_eq!(least_request(&c[..1], rng(1)), Some(0));
        assert_eq!(least_request(&[], rng(1)), None);
    }

    #[test]
    fn least_request_ties_are_random() {
        let c = [backend(0, 1, 50), backend(1, 1, 50)];
        let mut random = rng(7);
        let got = counts(
            2,
            (0..1000).map(|_| least_request(&c, &mut random).unwrap()),
        );
        assert!(got[0] > 400 && got[1] > 400, "{got:?}");
    }

    #[test]
    fn least_request_picks_two_distinct() {
        // Each call draws exactly one random number for the pair (no tie here),
        // so replaying the draw shows which two were compared.
        let c: Vec<Backend> = (0..5).map(|i| backend(i, 10 + i, 0)).collect();
        let mut draw = rng(3);
        for _ in 0..1000 {
            let r = draw();
            let a = (r as u32 as u64 % 5) as usize;
            let b = (a + 1 + ((r >> 32) % 4) as usize) % 5;
            assert_ne!(a, b);
            assert_eq!(least_request(&c, || r), Some(a.min(b)));
        }
    }

    #[test]
    fn least_request_avoids_the_busiest() {
        // The most loaded backend loses every comparison it is in.
        let c = [
            backend(0, 100, 0),
            backend(1, 1, 0),
            backend(2, 2, 0),
            backend(3, 3, 0),
        ];
        let mut random = rng(11);
        let got = counts(
            4,
            (0..2000).map(|_| least_request(&c, &mut random).unwrap()),
        );
        assert_eq!(got[0], 0, "{got:?}");
        assert!(got[1] > got[2] && got[2] > got[3], "{got:?}");
    }

    #[test]
    fn policy_names() {
        assert_eq!(Policy::parse("a", "round-robin"), Ok(Policy::RoundRobin));
        assert_eq!(
            Policy::parse("a", "weighted-round-robin"),
            Ok(Policy::WeightedRoundRobin)
        );
        assert_eq!(
            Policy::parse("a", "least-request"),
            Ok(Policy::LeastRequest)
        );
        assert_eq!(
            Policy::parse("a", "consistent-hash"),
            Ok(Policy::ConsistentHash)
        );
        assert_eq!(Policy::parse("a", "random"), Ok(Policy::Random));
        assert_eq!(Policy::parse("a", "first"), Ok(Policy::First));
        assert_eq!(
            Policy::parse("a", "sticky-cookie"),
            Ok(Policy::StickyCookie)
        );
        let err = Policy::parse("example.com", "rnadom").unwrap_err();
        assert_eq!(
            err,
            "upstream \"example.com\": unknown balancer \"rnadom\" (supported: round-robin, weighted-round-robin, least-request, consistent-hash, random, first, sticky-cookie)"
        );
    }

    /// The `round-robin` upstreams, and only they, are declared to the
    /// proxy, each over its own counter; their picks are the counter's
    /// turns, which `pick_v2` checks against the declaration (a wrong
    /// claim is an `Err` there), whatever the candidates' number.
    #[test]
    fn round_robin_upstreams_are_declared_with_their_counters() {
        use bbproxy_sdk::testing::{FakeRequest, TestHost, backends};
        let host = TestHost::new()
            .upstream("a.test", 3)
            .upstream_with_balancer("b.test", "least-request", 3)
            .upstream_with_balancer("c.test", "round-robin", 2);
        let mut lb = host.balancer_v2::<DefaultBalancer>("{}").unwrap();
        let declared: Vec<(u32, i64)> = lb
            .round_robin_upstreams()
            .into_iter()
            .map(|(u, turns)| (u, turns.get()))
            .collect();
        assert_eq!(declared, [(0, 0), (2, 0)]);
        let req = FakeRequest::get("a.test", "/");
        let order: Vec<usize> = (0..5)
            .map(|n| {
                let candidates = backends(if n == 3 { 2 } else { 3 });
                host.pick_v2(&mut lb, &req, 0, &candidates).unwrap()
            })
            .collect();
        assert_eq!(order, [0, 1, 2, 1, 1], "turn 3 of 2 candidates is 1");
        assert_eq!(host.pick_v2(&mut lb, &req, 2, &backends(2)), Ok(0));
        assert_eq!(lb.round_robin_upstreams()[1].1.get(), 1, "c.test's own");
    }

    #[test]
    fn config_takes_only_the_hash_settings() {
        assert!(Config::parse("{}").is_ok());
        assert!(Config::parse(" { } ").is_ok());
        let c =
            Config::parse(r#"{"hash": {"a.test": {"on": "path", "backends": ["http://x:1"]}}}"#)
                .unwrap();
        assert_eq!(c.hash["a.test"].backends, ["http://x:1"]);
        let err = Config::parse(r#"{"policy": "x"}"#).unwrap_err();
        assert!(err.contains("unknown field `policy`"), "{err}");
        assert!(Config::parse("[]").is_err());
        assert!(Config::parse("").is_err());
    }
}

#[cfg(test)]
mod hash_tests;
#[cfg(test)]
mod sticky_tests;
