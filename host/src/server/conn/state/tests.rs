//! A connection's timeouts: the floors and per-domain overrides the next
//! check is computed from, and a response body that waits for the socket.

use super::*;

const T: ConnTimeouts = ConnTimeouts {
    header: Duration::from_secs(10),
    keep_alive: Duration::from_secs(60),
    client_write: Duration::from_secs(2),
    keep_alive_floor: Duration::from_secs(60),
    client_write_floor: Duration::from_secs(2),
};

struct Count(std::sync::atomic::AtomicUsize);
impl std::task::Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// An HTTP/1 body waits while the socket is more than `BODY_AHEAD` behind
/// the body bytes already handed to hyper, and the write that brings it
/// back within that wakes it.
#[test]
fn a_body_waits_for_the_socket_to_catch_up() {
    let count = Arc::new(Count(Default::default()));
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    let s = ConnState::default();
    assert!(!s.hold_body(&mut cx), "nothing handed over yet");
    // One upstream read (16 KiB) handed over and not yet written: hyper
    // may have the next one too, to write both at once.
    s.yielded.fetch_add(16 << 10, Ordering::SeqCst);
    assert!(!s.hold_body(&mut cx), "one chunk ahead of the socket");
    s.yielded.fetch_add(16 << 10, Ordering::SeqCst);
    assert!(s.hold_body(&mut cx), "two chunks ahead");
    s.on_written(8 << 10);
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "progress wakes the body");
    assert!(s.hold_body(&mut cx), "still 8 KiB more than allowed");
    s.on_written(8 << 10);
    assert_eq!(count.0.load(Ordering::SeqCst), 2);
    assert!(!s.hold_body(&mut cx), "back within one chunk");
    s.on_written(100);
    assert_eq!(count.0.load(Ordering::SeqCst), 2, "no wake when not parked");
    let h2 = ConnState::default();
    h2.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    h2.yielded.fetch_add(1 << 20, Ordering::SeqCst);
    assert!(!h2.hold_body(&mut cx), "HTTP/2 streams are never held");
}

/// In every phase the driver looks again no later than a write stall
/// starting now could expire, and no later than a running one does.
#[test]
fn next_check_never_passes_a_write_deadline() {
    let fresh = || Arc::new(ConnState::default());
    let idle = fresh();
    let head = fresh();
    head.on_read(b"GET / HT");
    let h2 = fresh();
    h2.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let active = fresh();
    let request = active.begin();
    let after = fresh();
    drop(after.begin());
    for (phase, s) in [
        ("opened", &idle),
        ("head", &head),
        ("h2", &h2),
        ("active", &active),
        ("after a response", &after),
    ] {
        let now = Instant::now();
        let next = s.next_check(&T, now);
        assert!(
            next.is_some_and(|n| n <= now + T.client_write),
            "{phase}: {next:?}"
        );
        s.on_write_blocked();
        let deadline = s.write_expiry(&T);
        assert!(deadline.is_some(), "{phase}");
        let later = now + Duration::from_secs(1);
        assert!(
            s.next_check(&T, later)
                .is_some_and(|n| deadline.is_some_and(|d| n <= d)),
            "{phase}: a stall must bound the next check"
        );
        s.on_write_progress();
        assert_eq!(s.write_expiry(&T), None, "{phase}");
    }
    drop(request);
    let off = ConnTimeouts {
        client_write: Duration::ZERO,
        client_write_floor: Duration::ZERO,
        ..T
    };
    active.on_write_blocked();
    assert_eq!(active.write_expiry(&off), None);
    assert_eq!(active.write_check(&off, Instant::now()), None);
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn domain(keep_alive: u64, client_write: u64) -> ConnTimeoutOverride {
    ConnTimeoutOverride {
        keep_alive: ms(keep_alive),
        client_write: ms(client_write),
    }
}

/// The floors are the shortest non-zero value of the connection and
/// every domain; zeros (disabled) do not count.
#[test]
fn floors_are_the_shortest_enabled_values() {
    let t = ConnTimeouts::new(
        ms(10_000),
        ms(60_000),
        ms(2_000),
        [domain(400, 0), domain(0, 500), domain(90_000, 90_000)],
    );
    assert_eq!((t.keep_alive, t.client_write), (ms(60_000), ms(2_000)));
    assert_eq!(
        (t.keep_alive_floor, t.client_write_floor),
        (ms(400), ms(500))
    );
    // Top level disabled: the domains' values are the floors.
    let t = ConnTimeouts::new(ms(10_000), ms(0), ms(0), [domain(0, 700)]);
    assert_eq!((t.keep_alive_floor, t.client_write_floor), (ms(0), ms(700)));
    let t = ConnTimeouts::new(ms(10_000), ms(0), ms(0), []);
    assert_eq!((t.keep_alive_floor, t.client_write_floor), (ms(0), ms(0)));
}

/// A request's domain values replace the connection's until the next
/// response says otherwise; zero disables; none restores the
/// connection's; a value under the floor is raised to it.
#[test]
fn overrides_apply_until_the_next_response() {
    let t = ConnTimeouts::new(ms(10_000), ms(10_000), ms(60_000), [domain(400, 500)]);
    let s = ConnState::default();
    let eff = |s: &ConnState| {
        let e = s.effective(&t);
        (e.keep_alive, e.client_write)
    };
    assert_eq!(eff(&s), (ms(10_000), ms(60_000)));
    s.set_override(Some(domain(400, 500)));
    assert_eq!(eff(&s), (ms(400), ms(500)));
    s.set_override(Some(domain(0, 0)));
    assert_eq!(eff(&s), (ms(0), ms(0)));
    s.set_override(Some(domain(100, 100)));
    assert_eq!(eff(&s), (ms(400), ms(500)), "raised to the floors");
    s.set_override(None);
    assert_eq!(eff(&s), (ms(10_000), ms(60_000)));
    // Nothing could expire when accepted: a later domain cannot add one.
    let off = ConnTimeouts::new(ms(10_000), ms(0), ms(0), []);
    s.set_override(Some(domain(400, 500)));
    let e = s.effective(&off);
    assert_eq!((e.keep_alive, e.client_write), (ms(0), ms(0)));
}

/// While a request runs the driver looks again within the shortest
/// keep-alive a domain may bring, and in every phase within the
/// shortest client write timeout; after a response of the short
/// domain its keep-alive runs from the response's end.
#[test]
fn next_check_respects_the_floors() {
    let t = ConnTimeouts::new(ms(10_000), ms(10_000), ms(60_000), [domain(400, 500)]);
    let s = Arc::new(ConnState::default());
    // Idle, and with a head arriving: a request may start, be routed to
    // the short domain and end at once.
    let now = Instant::now();
    assert_eq!(
        s.next_check(&s.effective(&t), now),
        Some(now + ms(400)),
        "idle"
    );
    s.on_read(b"GET / HTTP/1.1\r\n\r\n");
    let now = Instant::now();
    assert_eq!(
        s.next_check(&s.effective(&t), now),
        Some(now + ms(400)),
        "head"
    );
    let request = s.begin();
    let now = Instant::now();
    let next = s.next_check(&s.effective(&t), now);
    assert_eq!(next, Some(now + ms(400)), "active: the keep-alive floor");
    s.set_override(Some(domain(400, 500)));
    s.on_write_blocked();
    let e = s.effective(&t);
    let stall = s.write_expiry(&e);
    // Stamps come from the coarse clock: never early, up to two of its
    // ticks late (`crate::clock::coarse_ms`).
    let late = ms(2 * crate::clock::coarse_tick_ms() + 1);
    assert!(stall.is_some_and(|at| at <= Instant::now() + ms(500) + late));
    assert!(
        s.next_check(&e, Instant::now())
            .is_some_and(|n| Some(n) <= stall)
    );
    s.on_write_progress();
    drop(request);
    let e = s.effective(&t);
    let expiry = s.expiry(&e);
    assert!(expiry.is_some_and(|at| at <= Instant::now() + ms(400) + late));
    let idle = s.next_check(&e, Instant::now());
    assert!(
        idle.is_some_and(|n| Some(n) <= expiry),
        "{idle:?} {expiry:?}"
    );
    // Without an override the connection's values apply again.
    s.set_override(None);
    let e = s.effective(&t);
    assert!(
        s.expiry(&e)
            .is_some_and(|at| at > Instant::now() + ms(9_000))
    );
    // A stall is looked at within the floor even when the current
    // domain's timeout is longer (another stream may shorten it).
    s.on_write_blocked();
    let later = Instant::now() + ms(5_000);
    assert!(
        s.write_check(&e, later)
            .is_some_and(|n| n <= later + ms(500))
    );
}
