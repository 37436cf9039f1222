//! Headless Chromium driven over the DevTools protocol, for tests of the
//! dashboard as a browser runs it. The protocol is JSON over one WebSocket;
//! the few frames it needs (masked text out, text and continuation in) are
//! written here rather than pulling a WebSocket crate into the build.
//!
//! Chromium runs with a fresh profile in a temp dir and every feature that
//! reaches the network off: the test machines have no network, and a
//! browser waiting for lookups would hang the test.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Chromium binary: `BBPROXY_CHROMIUM` or `chromium` on the path.
fn binary() -> PathBuf {
    std::env::var_os("BBPROXY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

/// A headless Chromium with one page, ended (by its process id) on drop.
pub struct Browser {
    child: Child,
    ws: Ws,
    session: String,
    next_id: u64,
    /// Protocol events received while waiting for answers.
    pub events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and opens `url` in a page `width`×`height` pixels.
    pub async fn open(url: &str, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            // Chromium makes temp dirs of its own (org.chromium.Chromium.*)
            // and leaves them behind when it is killed: in the profile dir,
            // they go with it.
            .env("TMPDIR", profile.path())
            // A group of its own, ended as one on drop (see there).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); install Debian's chromium (.ci/run does) or set BBPROXY_CHROMIUM",
                    binary().display()
                )
            });
        let (port, path) = active_port(profile.path()).await;
        let ws = Ws::connect(port, &path).await;
        let mut browser = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 1,
            events: Vec::new(),
            _profile: profile,
        };
        let target = browser
            .call_browser("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .call_browser(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Runtime.enable", json!({})).await;
        browser.call("Page.enable", json!({})).await;
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser.call("Page.navigate", json!({"url": url})).await;
        browser
    }

    async fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    /// Sends a command to the page and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session)).await
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = Value::String(s);
        }
        self.ws.send(&msg.to_string()).await;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let text = tokio::time::timeout(left, self.ws.recv())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// Evaluates `expression` in the page and returns its value (awaiting
    /// a promise).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true` or `deadline` passes.
    pub async fn wait_for(&mut self, deadline: Duration, what: &str, expression: &str) {
        let end = Instant::now() + deadline;
        loop {
            if self.eval(expression).await == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < end,
                "timed out after {deadline:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG of the page as shown.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }

    /// Uncaught exceptions the page threw so far.
    pub fn exceptions(&self) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Runtime.exceptionThrown")
            .collect()
    }
}

impl Drop for Browser {
    /// Ends the browser's whole process group before the profile dir is
    /// removed: killing the browser process alone left its zygote and
    /// utility processes running for a moment, and what they wrote into the
    /// profile while it was being removed stayed behind in /tmp (a
    /// `.tmpXXXXXX` of about 180 KiB for most suite runs).
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_child(&self.child);
        if rustix::process::kill_process_group(group, rustix::process::Signal::KILL).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The DevTools port and browser path Chromium writes into its profile.
async fn active_port(profile: &Path) -> (u16, String) {
    let file = profile.join("DevToolsActivePort");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                return (port.parse().unwrap(), path.to_owned());
            }
        }
        assert!(
            Instant::now() < end,
            "Chromium wrote no DevToolsActivePort within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket client: enough of RFC 6455 for the DevTools protocol.
struct Ws {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Ws {
    async fn connect(port: u16, path: &str) -> Ws {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: YmJwcm94eS10ZXN0LWtleQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "DevTools closed the connection during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        Ws {
            tcp,
            buf: buf[head_end..].to_vec(),
        }
    }

    /// Sends one text frame (client frames are masked).
    async fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0xc3, 0x3c, 0xa5];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await.unwrap();
    }

    async fn fill(&mut self, n: usize) {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; 64 * 1024];
            let read = self.tcp.read(&mut chunk).await.unwrap();
            assert!(read > 0, "DevTools closed the connection");
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    /// The next text message (joining continuation frames).
    async fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            self.fill(2).await;
            let (b0, b1) = (self.buf[0], self.buf[1]);
            let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
            let (mut header, mut len) = (2, u64::from(b1 & 0x7f));
            if len == 126 {
                self.fill(4).await;
                len = u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                header = 4;
            } else if len == 127 {
                self.fill(10).await;
                len = u64::from_be_bytes(self.buf[2..10].try_into().unwrap());
                header = 10;
            }
            let total = header + len as usize;
            self.fill(total).await;
            let payload: Vec<u8> = self.buf.drain(..total).skip(header).collect();
            match opcode {
                0x1 | 0x0 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).unwrap();
                    }
                }
                0x8 => panic!("DevTools closed the WebSocket"),
                // Ping, pong: nothing to answer for a short test.
                _ => {}
            }
        }
    }
}
