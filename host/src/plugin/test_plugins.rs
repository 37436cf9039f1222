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
    let upstreams: Arc<[Upstream]> = names
        .iter()
        .map(|name| Upstream {
            name: (*name).into(),
            balancer: "round-robin".into(),
            backends,
        })
        .collect();
    let limits = Limits::new(Duration::from_secs(1), 16 << 20);
    Plugin::load(runtime, "builtin", bytes, config.into(), limits, upstreams).unwrap()
}
