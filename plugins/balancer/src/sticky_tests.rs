//! `sticky-cookie` through the plugin's `init` and `pick`, on the SDK's
//! TestHost, configured as the host configures it.

use bbproxy_sdk::Backend;
use bbproxy_sdk::testing::{FakeRequest, TestHost, backends};

use crate::DefaultBalancer;

const TOKENS: [&str; 3] = ["0a1b2c3d4e5f6071", "8293a4b5c6d7e8f9", "f0e1d2c3b4a59687"];

/// A sticky-cookie balancer over three backends with [`TOKENS`].
fn sticky() -> (TestHost, DefaultBalancer) {
    let host = TestHost::new().upstream_with_balancer("app.test", "sticky-cookie", 3);
    let tokens: Vec<String> = TOKENS.iter().map(|t| format!("\"{t}\"")).collect();
    let config = format!(
        r#"{{"sticky": {{"app.test": {{"cookie": "bb_srv", "tokens": [{}]}}}}}}"#,
        tokens.join(", ")
    );
    let lb = host.balancer_v2::<DefaultBalancer>(&config).unwrap();
    (host, lb)
}

fn with_cookie(cookie: &str) -> FakeRequest {
    FakeRequest::get("app.test", "/").header("cookie", cookie)
}

/// The backend (by id) each of `n` picks of `req` among `candidates` goes to.
fn picks(
    host: &TestHost,
    lb: &mut DefaultBalancer,
    req: &FakeRequest,
    candidates: &[Backend],
    n: usize,
) -> Vec<u32> {
    (0..n)
        .map(|_| candidates[host.pick_v2(lb, req, 0, candidates).unwrap()].id)
        .collect()
}

/// A cookie with a candidate's token goes to that candidate every time,
/// wherever it is in the candidate list and among other cookies.
#[test]
fn a_cookie_naming_a_candidate_goes_to_it_every_time() {
    let (host, mut lb) = sticky();
    let all = backends(3);
    for (i, token) in TOKENS.iter().enumerate() {
        let req = with_cookie(&format!("theme=dark; bb_srv={token}; lang=en"));
        assert_eq!(picks(&host, &mut lb, &req, &all, 20), [i as u32; 20]);
        // Wherever it is in the list: with another backend left out (its
        // breaker open), the id decides, not the position.
        let others: Vec<Backend> = all
            .iter()
            .filter(|b| b.id != (i as u32 + 2) % 3)
            .copied()
            .collect();
        assert_eq!(picks(&host, &mut lb, &req, &others, 5), [i as u32; 5]);
    }
    // Quoted, as RFC 6265 allows a value to be sent.
    let req = with_cookie(&format!("bb_srv=\"{}\"", TOKENS[2]));
    assert_eq!(picks(&host, &mut lb, &req, &all, 3), [2; 3]);
}

/// Without the cookie, or with a value no backend has, or naming a backend
/// that is not a candidate now: round-robin over the candidates.
#[test]
fn without_a_cookie_for_a_candidate_it_goes_round_robin() {
    let all = backends(3);
    for cookie in [
        None,
        Some("other=1".to_owned()),
        Some("bb_srv=".to_owned()),
        Some("bb_srv=garbage; x=y".to_owned()),
        Some("bb_srv=0A1B2C3D4E5F6071".to_owned()),
        // Another cookie whose name ends like it.
        Some(format!("xbb_srv={}", TOKENS[1])),
    ] {
        let (host, mut lb) = sticky();
        let req = match &cookie {
            Some(c) => with_cookie(c),
            None => FakeRequest::get("app.test", "/"),
        };
        assert_eq!(
            picks(&host, &mut lb, &req, &all, 6),
            [0, 1, 2, 0, 1, 2],
            "{cookie:?}"
        );
    }
    // Backend 1's breaker is open: its clients are spread over the others.
    let (host, mut lb) = sticky();
    let req = with_cookie(&format!("bb_srv={}", TOKENS[1]));
    let without_1 = [backends(3)[0], backends(3)[2]];
    assert_eq!(picks(&host, &mut lb, &req, &without_1, 4), [0, 2, 0, 2]);
    // Back: they return to it.
    assert_eq!(picks(&host, &mut lb, &req, &all, 3), [1; 3]);
}

/// New clients are placed by weight: 3 of every 4 on a weight-3 backend.
#[test]
fn new_clients_are_placed_by_weight() {
    let (host, mut lb) = sticky();
    let all = backends(3);
    let weighted = [
        Backend {
            weight: 3,
            ..all[0]
        },
        all[1],
    ];
    let req = FakeRequest::get("app.test", "/");
    let placed = picks(&host, &mut lb, &req, &weighted, 400);
    assert_eq!(placed.iter().filter(|&&id| id == 0).count(), 300);
    // Each then stays: the cookie outweighs the weights.
    let req = with_cookie(&format!("bb_srv={}", TOKENS[1]));
    assert_eq!(picks(&host, &mut lb, &req, &weighted, 10), [1; 10]);
}

/// A request carrying the name twice goes to the first value that names a
/// candidate, so a stale value does not hide a good one; the cookie may be
/// in any of the request's cookie fields.
#[test]
fn the_first_value_naming_a_candidate_wins() {
    let (host, mut lb) = sticky();
    let all = backends(3);
    let req = with_cookie(&format!("bb_srv=stale; bb_srv={}", TOKENS[2]));
    assert_eq!(picks(&host, &mut lb, &req, &all, 3), [2; 3]);
    let req = with_cookie(&format!("bb_srv={}; bb_srv={}", TOKENS[1], TOKENS[0]));
    assert_eq!(picks(&host, &mut lb, &req, &all, 3), [1; 3]);
    let only_0 = [all[0], all[2]];
    assert_eq!(picks(&host, &mut lb, &req, &only_0, 3), [0; 3]);
    // An HTTP/2 client's cookie fields, which the proxy joins.
    let req = FakeRequest::get("app.test", "/")
        .header("cookie", "x=1")
        .header("cookie", &format!("bb_srv={}", TOKENS[2]));
    assert_eq!(picks(&host, &mut lb, &req, &all, 3), [2; 3]);
}

/// Settings that could never match the cookie the proxy sets refuse to
/// load, naming the upstream.
#[test]
fn bad_sticky_settings_refuse_to_load() {
    let host = TestHost::new().upstream_with_balancer("app.test", "sticky-cookie", 2);
    for (config, want) in [
        (
            "{}",
            "upstream \"app.test\": sticky-cookie needs its cookie and backend tokens",
        ),
        (
            r#"{"sticky": {"app.test": {"cookie": "a b", "tokens": ["x", "y"]}}}"#,
            "upstream \"app.test\": sticky-cookie: \"a b\" is not a valid cookie name",
        ),
        (
            r#"{"sticky": {"app.test": {"cookie": "s", "tokens": ["x"]}}}"#,
            "upstream \"app.test\": sticky-cookie: 1 tokens for 2 backends",
        ),
        (
            r#"{"sticky": {"app.test": {"cookie": "s", "tokens": ["x", "y"], "path": "/"}}}"#,
            "unknown field `path`",
        ),
    ] {
        let err = host.balancer_v2::<DefaultBalancer>(config).unwrap_err();
        assert!(err.contains(want), "{config}: {err}");
    }
}
