//! HTTP/2 probes on raw sockets (research list cases 27-28): frames that
//! break the protocol get GOAWAY with the right code, and a rapid-reset
//! flood is cut off long before it reaches the backend in bulk.

mod common;

use std::time::{Duration, Instant};

use common::raw::PLUGINS;
use common::{Backend, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Reads frames until GOAWAY; returns its error code.
async fn goaway_code(conn: &mut TcpStream) -> Option<u32> {
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
        if header[3] == 7 && payload.len() >= 8 {
            return Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
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
    // A bad preface is refused too (closed, nothing forwarded).
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_cut_off() {
    let b = Backend::start_with_delay("a", Duration::from_millis(200)).await;
    let p = proxy(&b).await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    conn.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let mut flood = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        flood.extend(get_headers(id));
        // RST_STREAM(CANCEL)
        flood.extend(frame(3, 0, id, &8u32.to_be_bytes()));
    }
    // The proxy may close before reading it all.
    let _ = conn.write_all(&flood).await;
    let code = goaway_code(&mut conn).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM), "{code:?}");
    assert!(b.hits() < 1000, "{} requests reached the backend", b.hits());
}
