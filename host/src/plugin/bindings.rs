//! Host-side bindings of the WIT worlds in `wit/`. They stay private to the
//! plugin module: the rest of the host talks to plugins through
//! [`super::Plugin`].

/// Marker type behind the WIT `request` resource. The host lends each call a
/// borrow of the one request it is deciding on, held in the store's data, so
/// the handle itself carries nothing.
pub struct RequestHandle;

/// Marker type behind the WIT `response` resource, lent to a filter's
/// `on-response` the way [`RequestHandle`] is: the response head is in the
/// store's data.
pub struct ResponseHandle;

/// Host type behind the WIT `host.counter` resource: a shared atomic counter.
pub type CounterHandle = std::sync::Arc<std::sync::atomic::AtomicI64>;

/// The router world; it also generates the shared `types` and `host`
/// interfaces that the other two worlds reuse.
pub mod router {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "router",
        with: {
            "bbproxy:plugin/types.request": super::RequestHandle,
            "bbproxy:plugin/types.response": super::ResponseHandle,
            "bbproxy:plugin/host.counter": super::CounterHandle,
        },
        imports: { default: trappable },
    });
}

/// The balancer world.
pub mod balancer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "balancer",
        with: {
            "bbproxy:plugin/types": super::router::bbproxy::plugin::types,
            "bbproxy:plugin/host": super::router::bbproxy::plugin::host,
        },
        imports: { default: trappable },
    });
}

/// The breaker world.
pub mod breaker {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "breaker",
        with: {
            "bbproxy:plugin/types": super::router::bbproxy::plugin::types,
            "bbproxy:plugin/host": super::router::bbproxy::plugin::host,
        },
        imports: { default: trappable },
    });
}

/// The filter world.
pub mod filter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "filter",
        with: {
            "bbproxy:plugin/types": super::router::bbproxy::plugin::types,
            "bbproxy:plugin/host": super::router::bbproxy::plugin::host,
        },
        imports: { default: trappable },
    });
}

/// The worlds of `bbproxy:plugin@0.2.0` (`wit/v0.2`). They import 0.1.1's
/// `types` and `host`, so those map onto the modules above: one Rust type
/// per WIT type, one host implementation for both versions.
pub mod v2 {
    /// The 0.2.0 router; it also generates the interfaces 0.2.0 adds
    /// (`decisions`, `candidates`), which the other worlds reuse.
    pub mod router {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "bbproxy:plugin/router@0.2.0",
            with: {
                "bbproxy:plugin/types@0.1.1": crate::plugin::bindings::types,
                "bbproxy:plugin/host@0.1.1": crate::plugin::bindings::host,
            },
            imports: { default: trappable },
        });
    }

    /// The 0.2.0 balancer.
    pub mod balancer {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "bbproxy:plugin/balancer@0.2.0",
            with: {
                "bbproxy:plugin/types@0.1.1": crate::plugin::bindings::types,
                "bbproxy:plugin/host@0.1.1": crate::plugin::bindings::host,
                "bbproxy:plugin/decisions@0.2.0": crate::plugin::bindings::v2::router::bbproxy::plugin0_2_0::decisions,
            },
            imports: { default: trappable },
        });
    }

    /// The 0.2.0 breaker.
    pub mod breaker {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "bbproxy:plugin/breaker@0.2.0",
            with: {
                "bbproxy:plugin/types@0.1.1": crate::plugin::bindings::types,
                "bbproxy:plugin/host@0.1.1": crate::plugin::bindings::host,
                "bbproxy:plugin/decisions@0.2.0": crate::plugin::bindings::v2::router::bbproxy::plugin0_2_0::decisions,
            },
            imports: { default: trappable },
        });
    }

    /// The 0.2.0 filter.
    pub mod filter {
        wasmtime::component::bindgen!({
            path: "../wit/v0.2",
            world: "bbproxy:plugin/filter@0.2.0",
            with: {
                "bbproxy:plugin/types@0.1.1": crate::plugin::bindings::types,
                "bbproxy:plugin/host@0.1.1": crate::plugin::bindings::host,
                "bbproxy:plugin/decisions@0.2.0": crate::plugin::bindings::v2::router::bbproxy::plugin0_2_0::decisions,
            },
            imports: { default: trappable },
        });
    }

    pub use balancer::bbproxy::plugin0_2_0::balancer_answers;
    pub use balancer::bbproxy::plugin0_2_0::candidates;
    pub use router::bbproxy::plugin0_2_0::decisions;
    pub use router::bbproxy::plugin0_2_0::router_answers;
}

pub use router::bbproxy::plugin::host;
pub use router::bbproxy::plugin::types;

impl types::Backend {
    /// A backend as a plugin sees it before its first request: position
    /// `id`, weight 1, nothing in flight, no history, breaker closed. Tests
    /// and `plugin check` change fields with struct update syntax, as plugin
    /// authors do with the SDK's `testing::backend`.
    pub fn fresh(id: u32) -> Self {
        Self {
            id,
            weight: 1,
            in_flight: 0,
            consecutive_failures: 0,
            consecutive_successes: 0,
            latency_ewma_us: 0,
            requests: 0,
            breaker: types::BreakerState::Closed,
        }
    }
}
