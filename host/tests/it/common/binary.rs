//! The real `bbproxy` binary as a child process serving a config in a temp
//! dir, with every stderr line (the log) kept, so tests can wait for and
//! assert on exactly what it logged.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Binary {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Lines that held a terminal escape byte before they were stripped.
    escaped: Arc<std::sync::atomic::AtomicUsize>,
    /// Lines before this index were consumed by `wait_line`.
    cursor: Mutex<usize>,
    pub dir: tempfile::TempDir,
}

impl Binary {
    /// Serves `config` with extra command-line `args`.
    pub fn start(config: &str, args: &[&str]) -> Binary {
        Self::spawn(config, args, |_| {})
    }

    /// Writes `config` to `config.json` in a fresh temp dir (after `setup`
    /// has put other files there) and serves it.
    pub fn serve(config: &str, setup: impl FnOnce(&Path)) -> Binary {
        Self::spawn(config, &[], setup)
    }

    /// Serves `config` with the process pinned to CPU `cpu` (`taskset`).
    pub fn start_pinned(config: &str, cpu: u32) -> Binary {
        let cpu = cpu.to_string();
        Self::spawn_via(&["taskset", "-c", &cpu], config, &[], |_| {})
    }

    /// Serves `config` with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Binary {
        Self::spawn_full(&[], config, &[], env, |_| {})
    }

    fn spawn(config: &str, args: &[&str], setup: impl FnOnce(&Path)) -> Binary {
        Self::spawn_via(&[], config, args, setup)
    }

    /// Starts the binary through the `wrapper` command line, if any.
    fn spawn_via(
        wrapper: &[&str],
        config: &str,
        args: &[&str],
        setup: impl FnOnce(&Path),
    ) -> Binary {
        Self::spawn_full(wrapper, config, args, &[], setup)
    }

    fn spawn_full(
        wrapper: &[&str],
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
        setup: impl FnOnce(&Path),
    ) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let bin = env!("CARGO_BIN_EXE_bbproxy");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args(args)
            .arg("--config")
            .arg(dir.path().join("config.json"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let escaped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (sink, escapes) = (lines.clone(), escaped.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains('\u{1b}') {
                    escapes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                sink.lock().unwrap().push(strip_ansi(&line));
            }
        });
        Binary {
            child,
            lines,
            escaped,
            cursor: Mutex::new(0),
            dir,
        }
    }

    /// Log lines so far that held a terminal escape code.
    pub fn escaped_lines(&self) -> usize {
        self.escaped.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Every line after the cursor up to and including the first that
    /// satisfies `pred`; the cursor moves past it. Blocking (for plain
    /// `#[test]`s and short waits).
    pub fn lines_until(
        &self,
        deadline: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        let end = Instant::now() + deadline;
        let start = *self.cursor.lock().unwrap();
        loop {
            {
                let lines = self.lines.lock().unwrap();
                let mut cursor = self.cursor.lock().unwrap();
                while *cursor < lines.len() {
                    let line = &lines[*cursor];
                    *cursor += 1;
                    if pred(line) {
                        return lines[start..*cursor].to_vec();
                    }
                }
            }
            assert!(
                Instant::now() < end,
                "no log line with {what} within {deadline:?}:\n{}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a line after the cursor that satisfies `pred`; returns it.
    pub fn wait_line(
        &self,
        deadline: Duration,
        what: &str,
        pred: impl FnMut(&str) -> bool,
    ) -> String {
        self.lines_until(deadline, what, pred)
            .pop()
            .unwrap_or_default()
    }

    /// Every stderr line so far that satisfies `pred`.
    pub fn lines_with(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| pred(l)).cloned().collect()
    }

    /// Waits until `count` stderr lines (from the start) satisfy `pred`;
    /// returns the last of them. Fails if the process exits first.
    pub async fn wait_lines(
        &mut self,
        count: usize,
        deadline: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let end = Instant::now() + deadline;
        loop {
            let seen = self.lines_with(&pred);
            if seen.len() >= count {
                return seen[count - 1].clone();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain what is left.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "bbproxy exited ({status}) before logging {what}:\n{}",
                    self.all()
                );
            }
            assert!(
                Instant::now() < end,
                "no log line with {what} within {deadline:?}:\n{}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The address after `prefix` in the first line that has it.
    pub async fn addr_after(&mut self, prefix: &str) -> std::net::SocketAddr {
        let line = self
            .wait_lines(1, Duration::from_secs(30), prefix, |l| l.contains(prefix))
            .await;
        let rest = line.rsplit(prefix).next().unwrap();
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        addr.parse().unwrap()
    }

    /// Sends `signal` (a `kill` name such as `HUP`) to this child only.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `utime + stime` of a process, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit(')').next().unwrap();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The line without terminal colour codes (`ESC [ ... m`), so tests match
/// `key=value` as written.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
