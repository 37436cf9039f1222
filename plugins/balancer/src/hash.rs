//! `consistent-hash`: rendezvous (highest random weight) hashing of a
//! request key onto the backends.
//!
//! Why rendezvous rather than a ring with virtual nodes: every backend's
//! score for a key is computed from the key and the backend alone, so
//! removing a backend moves exactly its keys and nothing else, and an
//! ineligible backend (breaker open, failing its health check, already
//! tried) simply drops out of the comparison: its keys go to their second
//! choice and come back when it returns, with no state to rebuild. A ring
//! needs 100+ virtual nodes per backend for an even spread (a table to
//! build per generation and a binary search per pick) and still moves a
//! little more than the removed share. Rendezvous costs one hash per
//! candidate per pick, which at the tens of backends an upstream has is a
//! few nanoseconds each.

use std::borrow::Cow;

use bbproxy_sdk::v2::Fact;
use bbproxy_sdk::{Backend, Request};

// One definition with the config checker's (the plugin contract).
pub use bbproxy_plugin_contract::balancers::HashOn;
use bbproxy_plugin_contract::balancers::cookie_values;
pub use bbproxy_plugin_contract::hash::fnv1a;
use bbproxy_plugin_contract::routes::query_pairs;

/// The key `on` names in `req`, if it has one; an empty value counts as
/// none. `fact` is [`fact`]`(on)`, which the balancer declared: its value
/// came with the call and is lent, not copied.
pub fn key<'r>(on: &HashOn, fact: &Fact, req: &Request<'r>) -> Option<Cow<'r, str>> {
    let value = req.lent(fact);
    let key = match on {
        HashOn::ClientIp | HashOn::Path | HashOn::Header(_) => value,
        HashOn::Cookie(name) => value.and_then(|c| {
            cookie_values(&c, name)
                .next()
                .map(|v| Cow::Owned(v.to_owned()))
        }),
        HashOn::Query(key) => value.and_then(|q| {
            query_pairs(&q).find_map(|(k, v)| (k == key.as_str()).then(|| Cow::Owned(v.to_owned())))
        }),
    };
    key.filter(|k| !k.is_empty())
}

/// The request fact [`key`] reads for `on` (contract 0.2.0), which the
/// balancer declares so that it comes with each `pick`.
pub fn fact(on: &HashOn) -> Fact {
    match on {
        HashOn::ClientIp => Fact::ClientAddr,
        HashOn::Path => Fact::Path,
        HashOn::Header(name) => Fact::header(name.to_ascii_lowercase()),
        HashOn::Cookie(_) => Fact::header("cookie"),
        HashOn::Query(_) => Fact::Query,
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A backend's point: its stable identity (a hash of its address), mixed.
/// Kept per backend, so a pick mixes once per candidate, not twice.
pub fn point(identity: u64) -> u64 {
    mix(identity)
}

/// The score of the backend at `point` for the key hashed to `key`.
fn score(key: u64, point: u64) -> u64 {
    mix(key ^ point)
}

/// The candidate with the highest score for `key`, where `point(id)` is
/// the [`point`] of the backend at position `id`. With unequal weights each
/// score is scaled as weighted rendezvous does (`w / -ln(u)`), so a backend
/// gets its weight's share of the keys.
pub fn pick(key: u64, candidates: &[Backend], point: impl Fn(u32) -> u64) -> Option<usize> {
    let first = candidates.first()?;
    let scores = candidates.iter().map(|b| score(key, point(b.id)));
    if candidates.iter().all(|b| b.weight == first.weight) {
        return highest(scores);
    }
    let weighted = scores.zip(candidates).map(|(s, b)| {
        // u in (0, 1]: the top 53 bits, never 0 (ln 0 is -inf).
        let u = ((s >> 11) + 1) as f64 / (1u64 << 53) as f64;
        f64::from(b.weight) / (-u.ln()).max(f64::MIN_POSITIVE)
    });
    weighted
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// [`pick`] among candidates of equal weight, given only their backend ids
/// (what `candidates.ids()` reads, far cheaper than the whole records):
/// the same choice, in the same order as the weighted score, without a
/// logarithm each.
pub fn pick_unweighted(
    key: u64,
    ids: impl IntoIterator<Item = u32>,
    point: impl Fn(u32) -> u64,
) -> Option<usize> {
    highest(ids.into_iter().map(|id| score(key, point(id))))
}

/// The position of the highest score (the last one on a tie, as
/// `max_by_key` chooses).
fn highest(scores: impl Iterator<Item = u64>) -> Option<usize> {
    scores.enumerate().max_by_key(|&(_, s)| s).map(|(i, _)| i)
}
