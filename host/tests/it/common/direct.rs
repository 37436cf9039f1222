//! Calling plugins directly, without a proxy: the request, the upstreams
//! and the backend list the sandbox tests hand to `load`, `route` and
//! `pick`, the hostile balancer loaded that way, and the thread's CPU clock
//! they measure calls with.

use std::sync::Arc;
use std::time::Duration;

use bbproxy::plugin::{
    Backend, Backoff, BalancerWorld, Limits, Plugin, RequestView, Runtime, Upstream,
};

/// A `GET /` for `host` from 127.0.0.1.
pub fn view(host: &str) -> Option<Box<RequestView>> {
    let (parts, ()) = http::Request::get("/")
        .header("host", host)
        .body(())
        .unwrap()
        .into_parts();
    Some(Box::new(RequestView {
        parts,
        host: host.to_owned(),
        client: "127.0.0.1:9".parse().unwrap(),
    }))
}

/// One fresh, closed backend.
pub fn candidates() -> [Backend; 1] {
    [Backend::fresh(0)]
}

/// Upstreams named `names`, one backend each, balanced round-robin: what a
/// plugin is loaded with.
pub fn upstreams(names: &[&str]) -> Arc<[Upstream]> {
    names
        .iter()
        .map(|name| Upstream {
            name: (*name).into(),
            balancer: "round-robin".into(),
            backends: 1,
        })
        .collect()
}

/// CPU time of the calling thread: what a plugin call's budget counts.
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap(),
        u32::try_from(t.tv_nsec).unwrap(),
    )
}

/// The hostile balancer fixture in `mode` with a CPU budget of `timeout`,
/// 16 MiB of memory and no suspension after faults; upstream 1 is the one
/// its hostile modes act on.
pub fn hostile_balancer(runtime: &Runtime, mode: &str, timeout: Duration) -> Plugin<BalancerWorld> {
    let bytes = std::fs::read(super::fixture("hostile_balancer.wasm")).unwrap();
    Plugin::load(
        runtime,
        mode,
        &bytes,
        format!(r#"{{"mode": "{mode}"}}"#),
        Limits {
            timeout,
            memory: 16 << 20,
            backoff: Backoff {
                after: u32::MAX,
                ..Backoff::default()
            },
        },
        upstreams(&["a.test", "b.test"]),
    )
    .unwrap()
}
