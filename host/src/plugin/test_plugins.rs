//! A bundled plugin loaded for a unit test, as a generation loads it: the
//! one place the tests of this module build their upstreams and limits.

use std::sync::Arc;
use std::time::Duration;

use super::{Limits, Plugin, Runtime, Upstream, World};

/// `bytes` loaded as the `builtin` plugin of its role on `runtime`, with
/// `config`, one upstream per name (round-robin, `backends` each) and a
/// 1 s deadline.
pub fn load<W: World>(
    runtime: &Runtime,
    bytes: &[u8],
    config: &str,
    names: &[&str],
    backends: u32,
) -> Plugin<W> {
    let upstreams: Vec<(&str, &str)> = names.iter().map(|n| (*n, "round-robin")).collect();
    load_balanced(runtime, bytes, config, &upstreams, backends)
}

/// As [`load`], with each upstream's `balancer` setting: `(name, balancer)`.
pub fn load_balanced<W: World>(
    runtime: &Runtime,
    bytes: &[u8],
    config: &str,
    upstreams: &[(&str, &str)],
    backends: u32,
) -> Plugin<W> {
    let upstreams: Arc<[Upstream]> = upstreams
        .iter()
        .map(|(name, balancer)| Upstream {
            name: (*name).into(),
            balancer: (*balancer).into(),
            backends,
        })
        .collect();
    let limits = Limits::new(Duration::from_secs(1), 16 << 20);
    Plugin::load(runtime, "builtin", bytes, config.into(), limits, upstreams).unwrap()
}
