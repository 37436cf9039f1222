//! HTTP/2 probes on raw sockets (research list cases 27-28): frames that
//! break the protocol get GOAWAY with the right code, and a rapid-reset
//! flood is cut off long before it reaches the backend in bulk. Also case
//! 20 seen from an HTTP/2 client: the reset code of a stream whose backend
//! failed mid-body.

use crate::common;

use std::time::{Duration, Instant};

use common::binary::{Binary, cpu_ticks};
use common::raw::PLUGINS;
use common::{Backend, Proxy};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /` for app.test, HPACK-encoded with the static table.
fn get_headers(stream: u32) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 0x08];
    block.extend_from_slice(b"app.test");
    frame(1, 0x4 | 0x1, stream, &block)
}

/// What a client saw of a GOAWAY: its last stream id and error code, and
/// whether the connection closed after it.
#[derive(Debug)]
struct GoAway {
    last_stream: u32,
    code: u32,
    closed: bool,
}

/// Reads frames until GOAWAY, then on to the close, all within `deadline`;
/// None if no GOAWAY came.
async fn read_goaway<R: AsyncRead + Unpin>(conn: &mut R, deadline: Duration) -> Option<GoAway> {
    let end = Instant::now() + deadline;
    let mut header = [0u8; 9];
    let mut away = None;
    let closed = loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        if conn.read_exact(&mut payload).await.is_err() {
            break true;
        }
        if header[3] == 7 && payload.len() >= 8 && away.is_none() {
            let word = |at: usize| {
                u32::from_be_bytes([
                    payload[at],
                    payload[at + 1],
                    payload[at + 2],
                    payload[at + 3],
                ])
            };
            away = Some((word(0) & 0x7fff_ffff, word(4)));
        }
    };
    away.map(|(last_stream, code)| GoAway {
        last_stream,
        code,
        closed,
    })
}

/// Reads frames until GOAWAY and the close; returns its error code.
async fn goaway_code(conn: &mut TcpStream) -> Option<u32> {
    read_goaway(conn, Duration::from_secs(10))
        .await
        .map(|g| g.code)
}

/// A literal header field without indexing, with a new name.
fn literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    hpack_int(0, 7, name.len(), out);
    out.extend_from_slice(name);
    hpack_int(0, 7, value.len(), out);
    out.extend_from_slice(value);
}

/// A request head for app.test on stream 1: `:method` (static index 2 GET
/// or 3 POST), `:scheme http`, `:path /`, `:authority`, then `fields`.
fn headers_with(method: u8, fields: &[(&[u8], &[u8])], end_stream: bool) -> Vec<u8> {
    let mut block = vec![0x80 | method, 0x86, 0x84, 0x41, 0x08];
    block.extend_from_slice(b"app.test");
    for (name, value) in fields {
        literal(name, value, &mut block);
    }
    let flags = if end_stream { 0x4 | 0x1 } else { 0x4 };
    frame(1, flags, 1, &block)
}

/// Reads frames until stream 1 is answered (HEADERS), reset (RST_STREAM)
/// or the connection gets GOAWAY; returns the frame type and, for the last
/// two, the error code. None if nothing came in time or it closed first.
async fn stream_one_outcome(conn: &mut TcpStream) -> Option<(u8, u32)> {
    let end = Instant::now() + Duration::from_secs(10);
    let mut header = [0u8; 9];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            _ => return None,
        }
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let code = |at: usize| {
            payload
                .get(at..at + 4)
                .map_or(u32::MAX, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        };
        match header[3] {
            1 if stream == 1 => return Some((1, 0)),
            3 if stream == 1 => return Some((3, code(0))),
            7 => return Some((7, code(4))),
            _ => {}
        }
    }
}

async fn proxy(b: &Backend) -> Proxy {
    Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"app.test": ["{}"]}}}}"#,
        b.addr
    ))
    .await
}

const PROTOCOL_ERROR: u32 = 1;
const FLOW_CONTROL_ERROR: u32 = 3;
const FRAME_SIZE_ERROR: u32 = 6;
const ENHANCE_YOUR_CALM: u32 = 11;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_goaway_with_the_right_code() {
    let b = Backend::start("a").await;
    let p = proxy(&b).await;
    let settings = frame(4, 0, 0, &[]);
    let probes: Vec<(&str, Vec<u8>, u32)> = vec![
        ("DATA on stream 0", frame(0, 0, 0, b"x"), PROTOCOL_ERROR),
        (
            "frame over SETTINGS_MAX_FRAME_SIZE",
            frame(0, 0, 1, &vec![0u8; 16_385]),
            FRAME_SIZE_ERROR,
        ),
        (
            "WINDOW_UPDATE of 0 on the connection",
            frame(8, 0, 0, &[0, 0, 0, 0]),
            PROTOCOL_ERROR,
        ),
        (
            "even stream id from a client",
            get_headers(2),
            PROTOCOL_ERROR,
        ),
    ];
    for (name, bad, code) in probes {
        let mut conn = TcpStream::connect(p.addr).await.unwrap();
        conn.write_all(PREFACE).await.unwrap();
        conn.write_all(&settings).await.unwrap();
        conn.write_all(&bad).await.unwrap();
        assert_eq!(goaway_code(&mut conn).await, Some(code), "{name}");
    }
    let mut pseudo_last = vec![0x82, 0x86, 0x41, 0x08];
    pseudo_last.extend_from_slice(b"app.test");
    literal(b"x-a", b"1", &mut pseudo_last);
    pseudo_last.push(0x84);
    // Malformed request heads (RFC 9113 8.2 and 8.3): the stream is reset
    // with PROTOCOL_ERROR, or for an uppercase name (which h2 finds while
    // decoding the header block) the connection is ended with it.
    const RST_STREAM: u8 = 3;
    const GOAWAY: u8 = 7;
    let malformed: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "uppercase name",
            headers_with(2, &[(b"X-Upper", b"1")], true),
            GOAWAY,
        ),
        (
            "connection header",
            headers_with(2, &[(b"connection", b"close")], true),
            RST_STREAM,
        ),
        (
            "transfer-encoding header",
            headers_with(2, &[(b"transfer-encoding", b"chunked")], true),
            RST_STREAM,
        ),
        (
            "pseudo-header after a regular one",
            frame(1, 0x4 | 0x1, 1, &pseudo_last),
            RST_STREAM,
        ),
    ];
    for (name, bad, kind) in malformed {
        let mut conn = TcpStream::connect(p.addr).await.unwrap();
        conn.write_all(PREFACE).await.unwrap();
        conn.write_all(&settings).await.unwrap();
        conn.write_all(&bad).await.unwrap();
        let got = stream_one_outcome(&mut conn).await;
        assert_eq!(got, Some((kind, PROTOCOL_ERROR)), "{name}");
        assert_eq!(b.hits(), 0, "{name} reached the backend");
    }
    // A WINDOW_UPDATE that takes the connection window past 2^31-1.
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    conn.write_all(&settings).await.unwrap();
    conn.write_all(&frame(8, 0, 0, &0x7fff_ffffu32.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(
        goaway_code(&mut conn).await,
        Some(FLOW_CONTROL_ERROR),
        "window overflow"
    );
    // A bad preface is not HTTP/2: the listener reads it as an HTTP/1.1
    // request line with version HTTP/2.0, answers 400 and closes.
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        .await
        .unwrap();
    let seen = common::raw::read_until_close(&mut conn, Duration::from_secs(5)).await;
    assert!(seen.closed, "bad preface: still open");
    assert!(
        seen.text().starts_with("HTTP/1.1 400 "),
        "bad preface: {}",
        seen.text()
    );
    assert_eq!(seen.statuses(), [400], "bad preface: {}", seen.text());
    assert_eq!(b.hits(), 0, "bad preface reached the backend");
    // Content-Length 5 with 3 bytes of DATA then END_STREAM: the stream is
    // reset (RFC 9113 8.1.1). Last, because the head may already be on its
    // way to the backend when the DATA frame shows the mismatch.
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    conn.write_all(&settings).await.unwrap();
    let mut bad = headers_with(3, &[(b"content-length", b"5")], false);
    bad.extend(frame(0, 0x1, 1, b"abc"));
    conn.write_all(&bad).await.unwrap();
    assert_eq!(
        stream_one_outcome(&mut conn).await,
        Some((RST_STREAM, PROTOCOL_ERROR)),
        "content-length 5 with 3 DATA bytes"
    );
}

/// Case 28: 10,000 HEADERS+RST_STREAM pairs on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_cut_off() {
    // RST_STREAM(CANCEL)
    reset_flood_is_cut_off("rapid reset", |id| frame(3, 0, id, &8u32.to_be_bytes())).await;
}

/// Case 28, MadeYouReset: 10,000 streams that each make the server reset
/// them (a WINDOW_UPDATE that overflows the stream's window is a stream
/// error, FLOW_CONTROL_ERROR, answered with RST_STREAM), so no RST_STREAM
/// ever comes from the client and a limit on client resets alone would not
/// see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_you_reset_flood_is_cut_off() {
    reset_flood_is_cut_off("made-you-reset", |id| {
        frame(8, 0, id, &0x7fff_ffffu32.to_be_bytes())
    })
    .await;
}

/// 10,000 streams, each a GET followed by `follow(stream)`, which gets the
/// stream reset, on one connection. The proxy (the real binary, so its CPU
/// time is its own) answers with GOAWAY ENHANCE_YOUR_CALM before 1,000
/// streams, the backend sees at most max_concurrent_streams (hyper's
/// default, 200) of them, the proxy's CPU is back to idle within 2 s of the
/// close, and it still serves. Another client, on its own connection, keeps
/// its p99 under 100 ms while the flood lasts (its requests take a few ms).
async fn reset_flood_is_cut_off(what: &str, follow: impl Fn(u32) -> Vec<u8>) {
    const PAIRS: u32 = 10_000;
    const MAX_CONCURRENT_STREAMS: u64 = 200;
    let b = Backend::start_with_delay("a", Duration::from_millis(200)).await;
    let other = Backend::start("other").await;
    let mut bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
                "domains": {{"app.test": ["{}"], "other.test": ["{}"]}}}}"#,
            b.addr, other.addr
        ),
        &[],
    );
    let addr = bin.addr_after("serving HTTP on ").await;
    let pid = bin.child.id();
    let bystander = Bystander::start(addr).await;
    let conn = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let mut flood = Vec::with_capacity(PAIRS as usize * 35);
    flood.extend_from_slice(PREFACE);
    flood.extend(frame(4, 0, 0, &[]));
    for i in 0..PAIRS {
        let id = 2 * i + 1;
        flood.extend(get_headers(id));
        flood.extend(follow(id));
    }
    let start = Instant::now();
    // The proxy may close before reading it all: the writer then fails.
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(20), wr.write_all(&flood)).await;
        wr
    });
    let away = read_goaway(&mut rd, Duration::from_secs(20)).await;
    let took = start.elapsed();
    let wr = writer.await.unwrap();
    drop((rd, wr));
    let away = away.unwrap_or_else(|| panic!("no GOAWAY for a {what} flood"));
    // Stopped before the CPU check below, which its own requests would fail.
    let (before, during) = bystander.stop().await;
    let p99 = |l: &[Duration]| l[(l.len() * 99 / 100).min(l.len() - 1)];
    eprintln!(
        "{what}: other client p99 {:?} before ({} requests), {:?} during the flood ({} requests)",
        p99(&before),
        before.len(),
        p99(&during),
        during.len()
    );
    assert!(
        p99(&during) < Duration::from_millis(100),
        "another client's p99 went to {:?} during the flood (before: {:?})",
        p99(&during),
        p99(&before)
    );

    let accepted = away.last_stream.div_ceil(2);
    eprintln!(
        "{what}: {PAIRS} pairs offered, GOAWAY code {} after {took:?}, last stream {} \
         ({accepted} streams), closed {}, backend saw {}",
        away.code,
        away.last_stream,
        away.closed,
        b.hits()
    );
    assert_eq!(away.code, ENHANCE_YOUR_CALM, "{away:?}");
    assert!(away.closed, "the connection stayed open after GOAWAY");
    assert!(accepted < 1000, "GOAWAY after {accepted} streams");
    // Requests the backend got are ones the proxy dispatched before the
    // resets cancelled them; let stragglers arrive, then bound them.
    let hits_at_close = b.hits();
    // CPU back to idle within 2 s: some 500 ms window ending by then in
    // which the proxy used at most 5 ticks (10% of one core); a proxy still
    // working through the flood uses 50 or more.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut windows = Vec::new();
    loop {
        let (t0, c0) = (Instant::now(), cpu_ticks(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let used = cpu_ticks(pid) - c0;
        windows.push((t0.elapsed(), used));
        if used <= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy CPU not idle within 2 s of the flood: ticks per window {windows:?}"
        );
    }
    eprintln!("{what}: CPU ticks per 500 ms window after the close: {windows:?}");
    assert!(
        b.hits() <= MAX_CONCURRENT_STREAMS,
        "{} requests reached the backend ({hits_at_close} at the close)",
        b.hits()
    );
    // Other clients are still served.
    let c = common::h2c_client_to(addr);
    let req = hyper::Request::get("http://app.test/")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 200);
    assert!(bin.is_running());
}

/// A client on its own HTTP/2 connection sending one request after another
/// to `other.test`, recording each one's latency: 30 before `start`
/// returns (the baseline), then until `stop` (at most 5,000 or 30 s).
struct Bystander {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
    before: Vec<Duration>,
}

impl Bystander {
    async fn start(addr: std::net::SocketAddr) -> Bystander {
        let c = common::h2c_client_to(addr);
        let one = move |c: common::HttpClientTo| async move {
            let req = hyper::Request::get("http://other.test/")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let t = Instant::now();
            let resp = c.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap();
            t.elapsed()
        };
        let mut before = Vec::new();
        for _ in 0..30 {
            before.push(one(c.clone()).await);
        }
        before.sort();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(30);
            let mut during = Vec::new();
            while during.len() < 5_000 && Instant::now() < end {
                if stopped.try_recv().is_ok() {
                    break;
                }
                during.push(one(c.clone()).await);
            }
            during.sort();
            during
        });
        Bystander { stop, task, before }
    }

    /// The latencies before and during, each sorted.
    async fn stop(self) -> (Vec<Duration>, Vec<Duration>) {
        let _ = self.stop.send(());
        let during = self.task.await.unwrap();
        assert!(!during.is_empty(), "the other client sent nothing");
        (self.before, during)
    }
}

/// Reads frames until stream 1 gets its answer (HEADERS or RST_STREAM) or
/// the connection gets GOAWAY; returns the frame type (1, 3 or 7), or None
/// if the connection closed or nothing came in time.
async fn first_answer(conn: &mut TcpStream) -> Option<u8> {
    let end = Instant::now() + Duration::from_secs(10);
    let mut header = [0u8; 9];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            _ => return None,
        }
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        match header[3] {
            1 | 3 if stream == 1 => return Some(header[3]),
            7 => return Some(7),
            _ => {}
        }
    }
}

/// HPACK integer with an `n`-bit prefix whose other bits are `flags`.
fn hpack_int(flags: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// The proxy answers a plain request on a new connection (it survived).
async fn still_serves(p: &Proxy) {
    assert_eq!(h2c_get(p, None).await, 200);
}

/// GET http://app.test/ over h2c (`:authority: app.test`), with `host` as a
/// `Host` header if given; the status.
async fn h2c_get(p: &Proxy, host: Option<&str>) -> u16 {
    let c = common::h2c_client_to(p.addr);
    let mut req = hyper::Request::get("http://app.test/");
    if let Some(h) = host {
        req = req.header(hyper::header::HOST, h);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    c.request(req).await.unwrap().status().as_u16()
}

/// Case 7 over HTTP/2: `:authority` and a `Host` header that disagree would
/// route on one host and reach the backend with the other: 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_that_differs_from_host_gets_400() {
    let b = Backend::start("a").await;
    let p = proxy(&b).await;
    assert_eq!(h2c_get(&p, Some("other.test")).await, 400);
    assert_eq!(b.hits(), 0);
    assert_eq!(h2c_get(&p, Some("app.test")).await, 200);
    assert_eq!(b.hits(), 1);
}

/// Case 29, HPACK bomb: a 4 KiB value put in the dynamic table once, then
/// referenced 10,000 times (one byte each) would decode to 40 MB of headers.
/// The header list limit stops it: the stream is answered or reset, the
/// backend sees nothing, the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_is_refused_without_reaching_the_backend() {
    let b = Backend::start("a").await;
    let p = proxy(&b).await;
    let mut block = vec![0x82, 0x86, 0x84, 0x41, 0x08];
    block.extend_from_slice(b"app.test");
    // Literal with incremental indexing, new name "x-b", 4096-byte value.
    block.push(0x40);
    hpack_int(0, 7, 3, &mut block);
    block.extend_from_slice(b"x-b");
    hpack_int(0, 7, 4096, &mut block);
    block.extend(std::iter::repeat_n(b'b', 4096));
    // The first dynamic entry is index 62.
    block.extend(std::iter::repeat_n(0x80 | 62u8, 10_000));
    assert!(block.len() <= 16_384);
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    conn.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let _ = conn.write_all(&frame(1, 0x4 | 0x1, 1, &block)).await;
    let answer = first_answer(&mut conn).await;
    assert!(
        matches!(answer, Some(1 | 3 | 7)),
        "no answer, reset or GOAWAY: {answer:?}"
    );
    assert_eq!(b.hits(), 0, "the bomb reached the backend");
    still_serves(&p).await;
    assert_eq!(b.hits(), 1);
}

/// Case 29, CONTINUATION flood: a HEADERS frame without END_HEADERS and an
/// endless run of CONTINUATION frames (16 MiB offered). The proxy must stop
/// it (GOAWAY or a closed connection) instead of buffering it all, and the
/// backend sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let b = Backend::start("a").await;
    let p = proxy(&b).await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    conn.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let mut first = vec![0x82, 0x86, 0x84, 0x41, 0x08];
    first.extend_from_slice(b"app.test");
    conn.write_all(&frame(1, 0x1, 1, &first)).await.unwrap();
    // Each CONTINUATION carries ~160 small literal headers (no indexing).
    let mut fields = Vec::new();
    for i in 0..160 {
        fields.push(0x00);
        let name = format!("x-{i:04}");
        hpack_int(0, 7, name.len(), &mut fields);
        fields.extend_from_slice(name.as_bytes());
        hpack_int(0, 7, 90, &mut fields);
        fields.extend(std::iter::repeat_n(b'v', 90));
    }
    let continuation = frame(9, 0, 1, &fields);
    let (mut rd, mut wr) = conn.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        let end = Instant::now() + Duration::from_secs(20);
        while sent < 16 << 20 && Instant::now() < end {
            if wr.write_all(&continuation).await.is_err() {
                return (sent, true);
            }
            sent += continuation.len();
        }
        (sent, false)
    });
    // GOAWAY, or the connection closed under the writer.
    let mut header = [0u8; 9];
    let mut got_goaway = false;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read_exact(&mut header)).await {
            Ok(Ok(_)) => {
                let len = (usize::from(header[0]) << 16)
                    | (usize::from(header[1]) << 8)
                    | usize::from(header[2]);
                let mut payload = vec![0u8; len];
                if rd.read_exact(&mut payload).await.is_err() {
                    break;
                }
                if header[3] == 7 {
                    got_goaway = true;
                    break;
                }
            }
            Ok(Err(_)) => break,
            Err(_) => panic!("neither GOAWAY nor a close within 20 s"),
        }
    }
    drop(rd);
    let (sent, cut) = writer.await.unwrap();
    eprintln!("continuation flood: {sent} bytes sent, writer cut: {cut}, GOAWAY: {got_goaway}");
    assert!(
        got_goaway || cut,
        "the proxy took all {sent} bytes without objecting"
    );
    assert_eq!(b.hits(), 0, "the flood reached the backend");
    still_serves(&p).await;
}

/// An idle HTTP/2 connection is told GOAWAY(NO_ERROR) at
/// `timeouts.keep_alive`, not before, and then closed. The client acks
/// SETTINGS and PING like a live peer, so only idleness ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway_no_error_at_keep_alive() {
    let b = Backend::start("a").await;
    let p = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "timeouts": {{"keep_alive": "800ms"}},
            "domains": {{"app.test": ["{}"]}}}}"#,
        b.addr
    ))
    .await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(4, 0, 0, &[]));
    hello.extend(get_headers(1));
    conn.write_all(&hello).await.unwrap();
    let sent = Instant::now();
    let end = sent + Duration::from_secs(10);
    let mut header = [0u8; 9];
    let mut answered = false;
    let mut goaway = None;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break,
            Err(_) => panic!(
                "the idle HTTP/2 connection is still open after 10 s (answered {answered}, GOAWAY {goaway:?}, keep-alive timeouts {})",
                common::counter("bbproxy_client_timeouts_total", &[("kind", "keep_alive")])
            ),
        }
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        if conn.read_exact(&mut payload).await.is_err() {
            break;
        }
        let (kind, flags, stream) = (header[3], header[4], header[5..9].to_vec());
        match kind {
            1 if stream == [0, 0, 0, 1] => answered = true,
            4 if flags & 1 == 0 => {
                let _ = conn.write_all(&frame(4, 1, 0, &[])).await;
            }
            6 if flags & 1 == 0 => {
                let _ = conn.write_all(&frame(6, 1, 0, &payload)).await;
            }
            7 if payload.len() >= 8 && goaway.is_none() => {
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                goaway = Some((code, sent.elapsed()));
            }
            _ => {}
        }
    }
    let closed = sent.elapsed();
    assert!(answered, "the request got no response");
    let (code, at) = goaway.expect("closed without a GOAWAY");
    assert_eq!(code, 0, "GOAWAY error code");
    assert!(
        at >= Duration::from_millis(750) && at < Duration::from_secs(3),
        "GOAWAY after {at:?}"
    );
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
}

/// `GET /` for `host`, HPACK-encoded (`:authority` a literal with the
/// static name).
fn get_for(stream: u32, host: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x41];
    hpack_int(0, 7, host.len(), &mut block);
    block.extend_from_slice(host.as_bytes());
    frame(1, 0x4 | 0x1, stream, &block)
}

/// What the proxy sent on one stream.
#[derive(Debug, Default, Clone)]
struct StreamSeen {
    headers: bool,
    data: Vec<u8>,
    ended: bool,
    reset: Option<u32>,
}

impl StreamSeen {
    fn done(&self) -> bool {
        self.ended || self.reset.is_some()
    }
}

/// Reads frames until each of `streams` ended or was reset, GOAWAY came,
/// or 30 s passed; what each stream got, and the GOAWAY code if any.
// 30 s, not 10: a deadline that runs out makes a stream look neither ended
// nor reset, and a loaded CI machine once took longer than 10 s to cut
// an h2c backend's stream.
async fn watch_streams(
    conn: &mut TcpStream,
    streams: &[u32],
) -> (std::collections::BTreeMap<u32, StreamSeen>, Option<u32>) {
    let mut seen: std::collections::BTreeMap<u32, StreamSeen> = streams
        .iter()
        .map(|&s| (s, StreamSeen::default()))
        .collect();
    let end = Instant::now() + Duration::from_secs(30);
    let mut header = [0u8; 9];
    while !seen.values().all(StreamSeen::done) {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read_exact(&mut header)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let len =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        if conn.read_exact(&mut payload).await.is_err() {
            break;
        }
        let (kind, flags) = (header[3], header[4]);
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let code = |at: usize| {
            payload
                .get(at..at + 4)
                .map_or(u32::MAX, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        };
        if kind == 7 {
            return (seen, Some(code(4)));
        }
        let Some(s) = seen.get_mut(&stream) else {
            continue;
        };
        match kind {
            0 => s.data.extend_from_slice(&payload),
            1 => s.headers = true,
            3 => s.reset = Some(code(0)),
            _ => {}
        }
        if matches!(kind, 0 | 1) && flags & 0x1 != 0 {
            s.ended = true;
        }
    }
    (seen, None)
}

const INTERNAL_ERROR: u32 = 2;

/// Research case 20 over HTTP/2: a backend that dies mid-body (a
/// Content-Length response on stream 1, a chunked one on stream 3) gets
/// that stream reset with INTERNAL_ERROR (hyper's code for a failed body
/// that carries no HTTP/2 reason), never an END_STREAM; stream 5 on
/// the same connection completes, and the connection gets no GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_body_resets_its_stream_with_internal_error() {
    let declared = common::raw::RawBackend::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial",
        Duration::ZERO,
    )
    .await;
    let chunked = common::raw::RawBackend::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\npartial\r\n",
        Duration::ZERO,
    )
    .await;
    let good = Backend::start("good").await;
    let p = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"declared.test": ["{}"], "chunked.test": ["{}"], "good.test": ["{}"]}}}}"#,
        declared.addr, chunked.addr, good.addr
    ))
    .await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(get_for(1, "declared.test"));
    out.extend(get_for(3, "chunked.test"));
    out.extend(get_for(5, "good.test"));
    conn.write_all(&out).await.unwrap();
    let (seen, goaway) = watch_streams(&mut conn, &[1, 3, 5]).await;
    assert_eq!(goaway, None, "{seen:#?}");
    for (stream, what) in [(1, "content-length"), (3, "chunked")] {
        // The head may or may not be out when the reset comes (h2 drops a
        // stream's queued frames when it resets it); the end never is.
        let s = &seen[&stream];
        assert!(!s.ended, "{what}: the cut body ended cleanly: {s:?}");
        assert_eq!(s.reset, Some(INTERNAL_ERROR), "{what}: {s:?}");
    }
    let s = &seen[&5];
    assert!(s.ended && s.reset.is_none(), "{s:?}");
    assert_eq!(s.data, b"backend good");
    // The connection still takes new streams.
    conn.write_all(&get_for(7, "good.test")).await.unwrap();
    let (seen, goaway) = watch_streams(&mut conn, &[7]).await;
    assert_eq!(goaway, None);
    assert_eq!(seen[&7].data, b"backend good", "{seen:#?}");
}

/// An h2c backend on raw frames: to each request it answers HEADERS (200)
/// and DATA "partial" without END_STREAM, then resets the stream with
/// `reset` or, if None, closes the connection (its sending half).
async fn h2c_backend_cut_mid_body(reset: Option<u32>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if s.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let _ = s.write_all(&frame(4, 0, 0, &[])).await;
                let mut header = [0u8; 9];
                while s.read_exact(&mut header).await.is_ok() {
                    let len = (usize::from(header[0]) << 16)
                        | (usize::from(header[1]) << 8)
                        | usize::from(header[2]);
                    let mut payload = vec![0u8; len];
                    if s.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]])
                        & 0x7fff_ffff;
                    match header[3] {
                        4 if header[4] & 0x1 == 0 => {
                            let _ = s.write_all(&frame(4, 0x1, 0, &[])).await;
                        }
                        1 => {
                            // :status 200 (static index 8), then part of a body.
                            let mut out = frame(1, 0x4, stream, &[0x88]);
                            out.extend(frame(0, 0, stream, b"partial"));
                            match reset {
                                Some(code) => out.extend(frame(3, 0, stream, &code.to_be_bytes())),
                                None => {
                                    // FIN, not RST (which could discard what
                                    // the proxy has not read yet); then wait
                                    // for its close.
                                    let _ = s.write_all(&out).await;
                                    let _ = s.shutdown().await;
                                    let mut rest = [0u8; 1024];
                                    let _ = tokio::time::timeout(Duration::from_secs(10), async {
                                        while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
                                    })
                                    .await;
                                    return;
                                }
                            }
                            let _ = s.write_all(&out).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

const CANCEL: u32 = 8;

/// Case 20 with HTTP/2 backends (`"protocol": "h2c"`): a backend whose
/// connection dies mid-body gets the client's stream reset with
/// INTERNAL_ERROR; a backend that resets its stream mid-body with CANCEL
/// has that code passed on. Either way the client's other stream
/// completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_backend_cut_mid_body_resets_the_clients_stream() {
    let closing = h2c_backend_cut_mid_body(None).await;
    let cancelling = h2c_backend_cut_mid_body(Some(CANCEL)).await;
    let good = Backend::start("good").await;
    let p = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"closing.test": {{"backends": ["http://{closing}"], "protocol": "h2c"}},
                         "cancelling.test": {{"backends": ["http://{cancelling}"], "protocol": "h2c"}},
                         "good.test": ["{}"]}}}}"#,
        good.addr
    ))
    .await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(get_for(1, "closing.test"));
    out.extend(get_for(3, "cancelling.test"));
    out.extend(get_for(5, "good.test"));
    conn.write_all(&out).await.unwrap();
    let (seen, goaway) = watch_streams(&mut conn, &[1, 3, 5]).await;
    assert_eq!(goaway, None, "{seen:#?}");
    for (stream, code) in [(1, INTERNAL_ERROR), (3, CANCEL)] {
        let s = &seen[&stream];
        assert!(
            !s.ended,
            "stream {stream}: the cut body ended cleanly: {s:?}"
        );
        assert_eq!(s.reset, Some(code), "stream {stream}: {s:?}");
    }
    let s = &seen[&5];
    assert!(s.ended && s.reset.is_none(), "{s:?}");
    assert_eq!(s.data, b"backend good");
}
