//! What ends an exchange with a backend early, as the HTTP/1.1 path
//! reports it.

/// An error of the exchange, as the response body reports it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What ended an exchange early on the backend's side.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    /// Closed before the response head.
    #[error("backend closed the connection before answering")]
    NoResponse,
    /// Closed before the response body's end.
    #[error("backend closed the connection before the response body ended")]
    BodyCut,
    /// The request body did not match its declared length.
    #[error("request body of {declared} bytes was {actual}")]
    Length {
        /// From `Content-Length`.
        declared: u64,
        /// What came (at least).
        actual: u64,
    },
}
