//! The host interface (`bbproxy:plugin/host`) as plain Rust functions.
//!
//! Compiled for `wasm32` every function is a direct call of the component
//! import, so the indirection costs nothing in a plugin. Compiled for any other
//! target (`cargo test` on the developer's machine) the same functions are
//! answered by the in-process host of [`crate::testing`], so policy code that
//! calls them runs natively, unchanged.

#[cfg(target_arch = "wasm32")]
use crate::bindings::router::bbproxy::plugin::host as wit;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::native;
use crate::{Level, Upstream};

/// Writes `message` to the proxy's log at `level`, tagged with the plugin's
/// name and role. In tests the line is kept by the [`TestHost`] (see
/// [`TestHost::logs`]) and printed, so a failing test shows it.
///
/// [`TestHost`]: crate::testing::TestHost
/// [`TestHost::logs`]: crate::testing::TestHost::logs
///
/// ```
/// bbproxy_sdk::log(bbproxy_sdk::Level::Info, "ready");
/// ```
#[inline]
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    wit::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    native::log(level, message);
}

/// Monotonic clock in nanoseconds since an arbitrary point (the proxy's
/// start). Use it for durations. In tests it starts at 0 and moves only with
/// [`TestHost::advance`](crate::testing::TestHost::advance).
///
/// ```
/// let start = bbproxy_sdk::monotonic_ns();
/// assert!(bbproxy_sdk::monotonic_ns() >= start);
/// ```
#[inline]
pub fn monotonic_ns() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return wit::monotonic_ns();
    #[cfg(not(target_arch = "wasm32"))]
    return native::monotonic_ns();
}

/// Wall-clock time in milliseconds since the Unix epoch. In tests it is
/// whatever [`TestHost::set_wall_ms`](crate::testing::TestHost::set_wall_ms)
/// said, advanced with the monotonic clock.
///
/// ```
/// let _now_ms: u64 = bbproxy_sdk::wall_ms();
/// ```
#[inline]
pub fn wall_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return wit::wall_ms();
    #[cfg(not(target_arch = "wasm32"))]
    return native::wall_ms();
}

/// A random 64-bit number (not for cryptography). In tests the sequence is
/// deterministic (see [`TestHost::seed_random`] and
/// [`TestHost::script_random`]).
///
/// [`TestHost::seed_random`]: crate::testing::TestHost::seed_random
/// [`TestHost::script_random`]: crate::testing::TestHost::script_random
///
/// ```
/// let coin = bbproxy_sdk::random() & 1;
/// assert!(coin <= 1);
/// ```
#[inline]
pub fn random() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return wit::random();
    #[cfg(not(target_arch = "wasm32"))]
    return native::random();
}

/// The upstreams of the current generation, in a stable order. The index of
/// an upstream in this list is the `upstream` number passed to
/// [`Balancer::pick`](crate::Balancer::pick) and
/// [`Breaker::on_outcome`](crate::Breaker::on_outcome). In tests they are the
/// ones declared with [`TestHost::upstream`](crate::testing::TestHost::upstream).
///
/// ```
/// for upstream in bbproxy_sdk::upstreams() {
///     bbproxy_sdk::log(bbproxy_sdk::Level::Debug, &upstream.name);
/// }
/// ```
#[inline]
pub fn upstreams() -> Vec<Upstream> {
    #[cfg(target_arch = "wasm32")]
    return wit::upstreams();
    #[cfg(not(target_arch = "wasm32"))]
    return native::upstreams();
}

/// Reads a value of the shared key-value store.
///
/// ```
/// assert!(bbproxy_sdk::kv_set("pinned", "2"));
/// assert_eq!(bbproxy_sdk::kv_get("pinned").as_deref(), Some("2"));
/// ```
#[inline]
pub fn kv_get(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return wit::kv_get(key);
    #[cfg(not(target_arch = "wasm32"))]
    return native::kv_get(key);
}

/// Writes a value of the shared key-value store. Keys up to 256 bytes, values
/// up to 64 KiB, at most 10,000 keys; returns false when a limit refuses the
/// write (the test host enforces the same limits).
///
/// ```
/// assert!(bbproxy_sdk::kv_set("mode", "drain"));
/// assert!(!bbproxy_sdk::kv_set(&"k".repeat(257), "too long a key"));
/// ```
#[inline]
pub fn kv_set(key: &str, value: &str) -> bool {
    #[cfg(target_arch = "wasm32")]
    return wit::kv_set(key, value);
    #[cfg(not(target_arch = "wasm32"))]
    return native::kv_set(key, value);
}

/// Removes a key of the shared key-value store; returns whether it existed.
///
/// ```
/// bbproxy_sdk::kv_set("once", "1");
/// assert!(bbproxy_sdk::kv_delete("once"));
/// assert!(!bbproxy_sdk::kv_delete("once"));
/// ```
#[inline]
pub fn kv_delete(key: &str) -> bool {
    #[cfg(target_arch = "wasm32")]
    return wit::kv_delete(key);
    #[cfg(not(target_arch = "wasm32"))]
    return native::kv_delete(key);
}

/// A signed 64-bit counter shared by every instance of every plugin on every
/// worker thread, keyed by name. It keeps its value across instance
/// replacement and reloads. Open it once (in `init`) and keep it.
///
/// ```
/// let requests = bbproxy_sdk::Counter::new("my-plugin.requests");
/// let before = requests.fetch_add(1);
/// assert_eq!(requests.get(), before + 1);
/// ```
pub struct Counter {
    #[cfg(target_arch = "wasm32")]
    inner: wit::Counter,
    // Natively a counter is its name: the test host can be reset between
    // tests, and a counter opened before the reset must see the new state.
    #[cfg(not(target_arch = "wasm32"))]
    name: String,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(target_arch = "wasm32")]
        return f.debug_tuple("Counter").field(&self.inner).finish();
        #[cfg(not(target_arch = "wasm32"))]
        return f.debug_tuple("Counter").field(&self.name).finish();
    }
}

impl Counter {
    /// Opens the counter `name`, creating it at 0 if it does not exist.
    ///
    /// ```
    /// let c = bbproxy_sdk::Counter::new("fresh");
    /// assert_eq!(c.get(), 0);
    /// ```
    #[inline]
    pub fn new(name: &str) -> Counter {
        #[cfg(target_arch = "wasm32")]
        return Counter {
            inner: wit::Counter::new(name),
        };
        #[cfg(not(target_arch = "wasm32"))]
        return Counter {
            name: native::counter_open(name),
        };
    }

    /// Adds `delta` atomically and returns the value before the addition
    /// (wrapping on overflow).
    ///
    /// ```
    /// let c = bbproxy_sdk::Counter::new("turns");
    /// assert_eq!((c.fetch_add(1), c.fetch_add(1)), (0, 1));
    /// ```
    #[inline]
    pub fn fetch_add(&self, delta: i64) -> i64 {
        #[cfg(target_arch = "wasm32")]
        return self.inner.fetch_add(delta);
        #[cfg(not(target_arch = "wasm32"))]
        return native::counter_update(&self.name, |v| v.wrapping_add(delta));
    }

    /// Reads the current value.
    ///
    /// ```
    /// let c = bbproxy_sdk::Counter::new("read-me");
    /// c.set(7);
    /// assert_eq!(c.get(), 7);
    /// ```
    #[inline]
    pub fn get(&self) -> i64 {
        #[cfg(target_arch = "wasm32")]
        return self.inner.get();
        #[cfg(not(target_arch = "wasm32"))]
        return native::counter_update(&self.name, |v| v);
    }

    /// Replaces the value.
    ///
    /// ```
    /// let c = bbproxy_sdk::Counter::new("reset-me");
    /// c.fetch_add(5);
    /// c.set(0);
    /// assert_eq!(c.get(), 0);
    /// ```
    #[inline]
    pub fn set(&self, value: i64) {
        #[cfg(target_arch = "wasm32")]
        self.inner.set(value);
        #[cfg(not(target_arch = "wasm32"))]
        native::counter_update(&self.name, |_| value);
    }

    /// Tells the proxy that upstream `upstream`'s picks are round-robin
    /// over this counter (contract 0.2.0's `balancer-answers`, during a
    /// balancer's `init`); natively nothing to tell.
    pub(crate) fn declare_round_robin(&self, upstream: u32) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::v2::balancer::bbproxy::plugin0_2_0::balancer_answers::round_robin(
            upstream,
            &self.inner,
        );
        #[cfg(not(target_arch = "wasm32"))]
        let _ = upstream;
    }

    /// Sets the value to `new` if it is `expected`; returns whether it did.
    ///
    /// ```
    /// let c = bbproxy_sdk::Counter::new("leader");
    /// assert!(c.compare_and_swap(0, 1));
    /// assert!(!c.compare_and_swap(0, 2));
    /// assert_eq!(c.get(), 1);
    /// ```
    #[inline]
    pub fn compare_and_swap(&self, expected: i64, new: i64) -> bool {
        #[cfg(target_arch = "wasm32")]
        return self.inner.compare_and_swap(expected, new);
        #[cfg(not(target_arch = "wasm32"))]
        return native::counter_update(&self.name, |v| if v == expected { new } else { v })
            == expected;
    }
}
