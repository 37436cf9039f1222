//! A routed request's domain timeouts for its client connection. The proxy
//! learns them when it routes; the server's connection driver applies them
//! after the response. The type sits below both so that neither imports
//! the other's internals.

use std::time::Duration;

/// A routed request's domain timeouts, carried from the proxy to the
/// connection in the response's extensions; zero disables one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTimeoutOverride {
    /// Idle after this response until the next request head.
    pub keep_alive: Duration,
    /// Longest time writes of this response may make no progress.
    pub client_write: Duration,
}
