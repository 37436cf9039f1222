//! Running one test in a process of its own, inside the one test binary.
//!
//! Some tests read values that belong to the whole process: the Prometheus
//! recorder every in-process proxy reports into, the process's RSS or its
//! open descriptors, the global log subscriber. Any other test running
//! beside them in the same process moves those values. Such a test starts
//! with [`in_own_process!`]: the first time, it starts this binary again
//! running only itself (`--exact`), waits for it and passes or fails with
//! it; in that child process the test's body runs with no other test
//! beside it. Children run beside each other (each has its own recorder
//! and subscriber), except those that measure the machine's share of the
//! process: `in_own_process!(alone)` (RSS, descriptors, hundreds of
//! connections against a timer) runs with no other child at all, since
//! two such children on two CPUs starve each other.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Set in the child to the name of the one test it runs.
const CHILD_ENV: &str = "BBPROXY_IT_ALONE";

/// A child process that takes longer than this is killed and the test
/// fails: far above the slowest test, so only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(600);

/// Makes the calling test run in a process of its own: returns from the
/// test in the parent once the child passed (panics if it failed), and
/// falls through in the child, which runs the body.
macro_rules! in_own_process {
    () => {
        if $crate::common::alone::rerun_in_child(false) {
            return;
        }
    };
    (alone) => {
        if $crate::common::alone::rerun_in_child(true) {
            return;
        }
    };
}
pub(crate) use in_own_process;

/// In the child running this test: false. Otherwise runs this binary
/// again with only the current test (with no other child running when
/// `alone`), forwards its output, asserts it passed and returns true.
pub fn rerun_in_child(alone: bool) -> bool {
    // libtest runs each test on a thread named after the test's path.
    let name = std::thread::current()
        .name()
        .expect("libtest names each test's thread")
        .to_owned();
    if std::env::var(CHILD_ENV).is_ok_and(|n| n == name) {
        return false;
    }
    // A measuring child runs with no other child: two of them at once on
    // two CPUs starve each other (500 stalled readers were not cut within
    // 30 s beside the 10,000-fault RSS test). The others only need a
    // process of their own, and run beside each other.
    static CHILDREN: std::sync::RwLock<()> = std::sync::RwLock::new(());
    let _exclusive = alone.then(|| CHILDREN.write().unwrap_or_else(|p| p.into_inner()));
    let _shared = (!alone).then(|| CHILDREN.read().unwrap_or_else(|p| p.into_inner()));
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([&name, "--exact", "--nocapture", "--include-ignored"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, &name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the test binary again");
    let pid = child.id();
    let (out, err) = (child.stdout.take(), child.stderr.take());
    // Both pipes are drained on their own threads so a chatty child never
    // blocks on a full pipe; the wait itself has a deadline.
    let (stdout, stderr) = (drain(out), drain(err));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(DEADLINE) {
        Ok(status) => status.expect("waiting for the child test process"),
        Err(_) => {
            // Ours: started just above, identified by its PID.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{name} did not finish within {DEADLINE:?} in its own process");
        }
    };
    // Shown with the parent's result (libtest captures these unless
    // --nocapture), so a failure reads as the child's output.
    let stdout = stdout.join().unwrap_or_default();
    print!("{stdout}");
    eprint!("{}", stderr.join().unwrap_or_default());
    assert!(
        status.success(),
        "{name} failed in its own process ({status})"
    );
    // A filter that matched nothing would pass too: the child must have run
    // exactly this test.
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{name}: the child process did not run it"
    );
    true
}

/// Reads a child's pipe to the end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}
