//! The real `bbproxy` binary as a child process, its stderr (the log)
//! delivered line by line, so tests can assert on exactly what it logged.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The real binary, with stderr lines delivered through a channel.
pub struct Binary {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Binary {
    pub fn start(config: &str, args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bbproxy"))
            .args(args)
            .arg("--config")
            .arg(dir.path().join("config.json"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Binary {
            child,
            lines,
            _dir: dir,
        }
    }

    /// Waits for a line that satisfies `pred`; returns it.
    pub fn wait_line(
        &self,
        deadline: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {what} within {deadline:?}"),
            }
        }
    }

    /// Every line up to and including the first that satisfies `pred`.
    pub fn lines_until(
        &self,
        deadline: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        self.wait_line(deadline, what, |l| {
            seen.push(l.to_owned());
            pred(l)
        });
        seen
    }

    /// The proxy's HTTP address, from its "serving HTTP on" line.
    pub fn http_addr(&self) -> String {
        let line = self.wait_line(Duration::from_secs(60), "the listen address", |l| {
            l.contains("serving HTTP on")
        });
        line.rsplit("serving HTTP on ")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
