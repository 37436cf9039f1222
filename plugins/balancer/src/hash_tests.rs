//! `consistent-hash`, `random` and `first` through the plugin's `init` and
//! `pick`, on the SDK's TestHost, configured as the host configures them.

use std::collections::HashMap;

use bbproxy_sdk::Backend;
use bbproxy_sdk::testing::{FakeRequest, TestHost, backends};

use crate::DefaultBalancer;

const KEYS: usize = 10_000;

fn address(i: usize) -> String {
    format!("http://10.0.0.{}:8080", i + 1)
}

/// A consistent-hash balancer over the backends with these address
/// numbers, hashing `on`.
fn hashing(on: &str, addresses: &[usize]) -> (TestHost, DefaultBalancer) {
    hashing_with(on, addresses, false)
}

/// [`hashing`], `weighted` as the host says when the weights differ.
fn hashing_with(on: &str, addresses: &[usize], weighted: bool) -> (TestHost, DefaultBalancer) {
    let list: Vec<String> = addresses
        .iter()
        .map(|&i| format!("\"{}\"", address(i)))
        .collect();
    let host = TestHost::new().upstream_with_balancer(
        "app.test",
        "consistent-hash",
        addresses.len() as u32,
    );
    let config = format!(
        r#"{{"hash": {{"app.test": {{"on": "{on}", "backends": [{}], "weighted": {weighted}}}}}}}"#,
        list.join(", ")
    );
    let lb = host.balancer_v2::<DefaultBalancer>(&config).unwrap();
    (host, lb)
}

fn user(k: usize) -> FakeRequest {
    FakeRequest::get("app.test", "/").header("x-user", &format!("user-{k}"))
}

/// Where each of the KEYS users goes (as an address number) among the
/// backends with these address numbers, of which `eligible` positions are
/// candidates.
fn placement(addresses: &[usize], eligible: &[u32]) -> Vec<usize> {
    let (host, mut lb) = hashing("header:x-user", addresses);
    let all = backends(addresses.len() as u32);
    let candidates: Vec<Backend> = all
        .into_iter()
        .filter(|b| eligible.contains(&b.id))
        .collect();
    (0..KEYS)
        .map(|k| {
            let i = host.pick_v2(&mut lb, &user(k), 0, &candidates).unwrap();
            addresses[candidates[i].id as usize]
        })
        .collect()
}

fn shares(placed: &[usize]) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    for &a in placed {
        *counts.entry(a).or_default() += 1;
    }
    counts
}

/// 10,000 keys over 4 backends, one removed from the list (the others
/// shift position): every key of the remaining three stays where it was;
/// adding it back moves at most 1/4 + 5 % of the keys, all to it.
#[test]
fn removing_a_backend_moves_only_its_keys_and_adding_one_moves_at_most_its_share() {
    let four = placement(&[0, 1, 2, 3], &[0, 1, 2, 3]);
    let spread = shares(&four);
    eprintln!("10,000 keys on 4 backends: {spread:?}");
    for a in 0..4 {
        // An even spread, within 10 % of 2,500.
        assert!((2250..=2750).contains(&spread[&a]), "{spread:?}");
    }
    let three = placement(&[0, 1, 3], &[0, 1, 2]);
    let mut moved = 0;
    for (k, (&before, &after)) in four.iter().zip(&three).enumerate() {
        if before == 2 {
            moved += 1;
            assert_ne!(after, 2);
        } else {
            assert_eq!(before, after, "key {k} moved off a backend that stayed");
        }
    }
    eprintln!("4 -> 3 backends: {moved} of {KEYS} keys moved (the removed one's)");

    let back = placement(&[0, 1, 2, 3], &[0, 1, 2, 3]);
    let moved_back: Vec<usize> = (0..KEYS).filter(|&k| three[k] != back[k]).collect();
    eprintln!("3 -> 4 backends: {} of {KEYS} keys moved", moved_back.len());
    assert!(moved_back.len() as f64 <= KEYS as f64 * (1.0 / 4.0 + 0.05));
    assert!(
        moved_back.iter().all(|&k| back[k] == 2),
        "keys moved only to the added backend"
    );
}

/// A backend the host leaves out of the candidates (breaker open, failing
/// its health check) sends each of its keys to one other backend, the
/// same one every time, and gets them all back when it is a candidate
/// again; the other keys never move.
#[test]
fn an_ineligible_backend_lends_its_keys_and_gets_them_back() {
    let all = placement(&[0, 1, 2, 3], &[0, 1, 2, 3]);
    let without_1 = placement(&[0, 1, 2, 3], &[0, 2, 3]);
    let again = placement(&[0, 1, 2, 3], &[0, 2, 3]);
    assert_eq!(
        without_1, again,
        "its keys go to the same next choice each time"
    );
    let lent = (0..KEYS).filter(|&k| all[k] == 1).count();
    for k in 0..KEYS {
        if all[k] != 1 {
            assert_eq!(all[k], without_1[k]);
        }
    }
    // The lent keys spread over the other three rather than piling on one.
    let spread = shares(
        &(0..KEYS)
            .filter(|&k| all[k] == 1)
            .map(|k| without_1[k])
            .collect::<Vec<_>>(),
    );
    eprintln!("{lent} keys of an open backend went to {spread:?}");
    assert!(spread.values().all(|&n| n * 5 > lent), "{spread:?}");
    assert_eq!(
        placement(&[0, 1, 2, 3], &[0, 1, 2, 3]),
        all,
        "recovered: all keys back"
    );
}

/// Equal weights aside, each backend gets its weight's share of the keys.
#[test]
fn weights_share_the_keys() {
    let (host, mut lb) = hashing_with("header:x-user", &[0, 1], true);
    let candidates = [
        Backend {
            weight: 3,
            ..backends(2)[0]
        },
        backends(2)[1],
    ];
    let on_first = (0..KEYS)
        .filter(|&k| host.pick_v2(&mut lb, &user(k), 0, &candidates).unwrap() == 0)
        .count();
    assert!(
        (7250..=7750).contains(&on_first),
        "weight 3 of 4 took {on_first}"
    );
}

/// Each `hash_on` source reads its key, and a request without it goes
/// round-robin.
#[test]
fn every_hash_on_source_and_the_round_robin_fallback() {
    let candidates = backends(4);
    for (on, with_key, same_key) in [
        ("header:x-user", user(7), user(7).client("10.9.9.9")),
        (
            "cookie:session",
            FakeRequest::get("app.test", "/").header("cookie", "a=1; session=abc; b=2"),
            FakeRequest::get("app.test", "/x").header("cookie", "session=abc"),
        ),
        (
            "query:key",
            FakeRequest::get("app.test", "/?a=1&key=k1"),
            FakeRequest::get("app.test", "/y?key=k1"),
        ),
        (
            "path",
            FakeRequest::get("app.test", "/p/1?x=1"),
            FakeRequest::get("app.test", "/p/1").header("x-user", "other"),
        ),
        (
            "client_ip",
            FakeRequest::get("app.test", "/a").client("203.0.113.9"),
            FakeRequest::get("app.test", "/b").client("203.0.113.9"),
        ),
    ] {
        let (host, mut lb) = hashing(on, &[0, 1, 2, 3]);
        let first = host.pick_v2(&mut lb, &with_key, 0, &candidates).unwrap();
        for _ in 0..20 {
            assert_eq!(
                host.pick_v2(&mut lb, &same_key, 0, &candidates),
                Ok(first),
                "{on}"
            );
        }
        // Different keys reach every backend.
        let reached: std::collections::HashSet<usize> = (0..200)
            .map(|k| {
                let req = match on {
                    "header:x-user" => user(k),
                    "cookie:session" => {
                        FakeRequest::get("app.test", "/").header("cookie", &format!("session=s{k}"))
                    }
                    "query:key" => FakeRequest::get("app.test", &format!("/?key={k}")),
                    "path" => FakeRequest::get("app.test", &format!("/p/{k}")),
                    _ => FakeRequest::get("app.test", "/").client(&format!(
                        "10.0.{}.{}",
                        k / 250,
                        k % 250
                    )),
                };
                host.pick_v2(&mut lb, &req, 0, &candidates).unwrap()
            })
            .collect();
        assert_eq!(reached.len(), 4, "{on}");
    }
    // Without the key (or with an empty one): round-robin.
    for (on, keyless) in [
        (
            "header:x-user",
            FakeRequest::get("app.test", "/").header("x-user", ""),
        ),
        (
            "cookie:session",
            FakeRequest::get("app.test", "/").header("cookie", "other=1"),
        ),
        ("query:key", FakeRequest::get("app.test", "/?keys=1")),
    ] {
        let (host, mut lb) = hashing(on, &[0, 1, 2, 3]);
        let order: Vec<usize> = (0..8)
            .map(|_| host.pick_v2(&mut lb, &keyless, 0, &candidates).unwrap())
            .collect();
        assert_eq!(order, [0, 1, 2, 3, 0, 1, 2, 3], "{on}");
    }
}

#[test]
fn a_bad_hash_on_refuses_to_load() {
    let host = TestHost::new().upstream_with_balancer("app.test", "consistent-hash", 2);
    let err = host
        .balancer_v2::<DefaultBalancer>(r#"{"hash": {"app.test": {"on": "ip"}}}"#)
        .unwrap_err();
    assert!(
        err.contains("upstream \"app.test\": unknown hash_on \"ip\""),
        "{err}"
    );
    // Without settings it hashes the client address.
    let mut lb = host.balancer_v2::<DefaultBalancer>("{}").unwrap();
    let req = FakeRequest::get("app.test", "/").client("198.51.100.4");
    let first = host.pick_v2(&mut lb, &req, 0, &backends(2)).unwrap();
    for _ in 0..10 {
        assert_eq!(host.pick_v2(&mut lb, &req, 0, &backends(2)), Ok(first));
    }
}

/// `first`: the eligible backend earliest in configured order, so the
/// standby takes over while the active one is out and gives it back.
#[test]
fn first_is_active_standby() {
    let host = TestHost::new().upstream_with_balancer("app.test", "first", 3);
    let mut lb = host.balancer_v2::<DefaultBalancer>("{}").unwrap();
    let req = FakeRequest::get("app.test", "/");
    let all = backends(3);
    assert_eq!(host.pick_v2(&mut lb, &req, 0, &all), Ok(0));
    // The active one out (its breaker open): the next in configured order.
    let standby = &all[1..];
    assert_eq!(
        standby[host.pick_v2(&mut lb, &req, 0, standby).unwrap()].id,
        1,
        "the standby"
    );
    assert_eq!(host.pick_v2(&mut lb, &req, 0, &all[2..]), Ok(0));
    // The active one back: it takes over again.
    assert_eq!(host.pick_v2(&mut lb, &req, 0, &all), Ok(0));
    // The proxy never lists candidates out of order; the test host refuses
    // to, as the balancer relies on it.
    let err = host
        .pick_v2(&mut lb, &req, 0, &[all[2], all[1]])
        .unwrap_err();
    assert!(err.contains("configured order"), "{err}");
}

/// `random`: every candidate, in roughly equal shares.
#[test]
fn random_spreads_over_every_candidate() {
    let host = TestHost::new().upstream_with_balancer("app.test", "random", 4);
    host.seed_random(42);
    let mut lb = host.balancer_v2::<DefaultBalancer>("{}").unwrap();
    let req = FakeRequest::get("app.test", "/");
    let mut counts = [0usize; 4];
    for _ in 0..4000 {
        counts[host.pick_v2(&mut lb, &req, 0, &backends(4)).unwrap()] += 1;
    }
    assert!(
        counts.iter().all(|&n| (850..=1150).contains(&n)),
        "{counts:?}"
    );
}
