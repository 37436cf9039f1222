//! Process and connection limits: the open-file limit raised at start, and
//! connections over `limits.max_connections` refused at once.

use tokio::net::TcpStream;

/// The open-file limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit found at start.
    pub before: u64,
    /// Soft limit now (the hard limit unless raising failed).
    pub now: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: each client and each
/// backend connection is a descriptor, and distributions start services
/// with a soft limit of 1024, far below what a proxy needs.
pub fn raise_nofile_limit() -> std::io::Result<NofileLimit> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft >= hard {
        return Ok(NofileLimit {
            before: soft,
            now: soft,
            hard,
        });
    }
    rlimit::Resource::NOFILE.set(hard, hard)?;
    let (now, hard) = rlimit::Resource::NOFILE.get()?;
    Ok(NofileLimit {
        before: soft,
        now,
        hard,
    })
}

/// Turns away a connection over the limit without spending a task on it: a
/// short 503 if the socket takes it at once, then close.
pub fn refuse(stream: TcpStream) {
    const RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 38\r\n\r\nbbproxy: too many client connections\r\n";
    let _ = stream.try_write(RESPONSE);
    let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
    metrics::counter!(crate::telemetry::names::CONNECTIONS_REFUSED).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let l = raise_nofile_limit().unwrap();
        assert_eq!(l.now, l.hard);
        assert!(l.now >= l.before);
    }
}
