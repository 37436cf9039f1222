//! Once serving, the binary hands back the pages of its own file that
//! only start-up used (`bbproxy::residency`): they stop counting in its
//! resident set, and whatever runs later faults them back in unchanged.

use std::time::Duration;

use crate::common::{self, Backend, binary::Binary, get, wait_for};

/// The `Rss` of the binary's executable mappings of process `pid`, in KiB.
fn code_resident_kib(pid: u32, binary: &str) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut total = 0;
    let mut counted = false;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            counted = fields.get(1) == Some(&"r-xp") && fields.last() == Some(&binary);
        } else if counted && fields.first() == Some(&"Rss:") {
            total += fields[1].parse::<u64>().unwrap();
        }
    }
    total
}

/// The two MiB figures of the start-up line ("went from X to Y MiB").
fn start_up_figures(line: &str) -> (f64, f64) {
    let rest = line.split("went from ").nth(1).unwrap_or_default();
    let mut numbers = rest
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>().unwrap());
    match (numbers.next(), numbers.next()) {
        (Some(before), Some(after)) => (before, after),
        _ => panic!("no figures in {line:?}"),
    }
}

/// More than half of the binary's resident pages are released once it
/// serves; the code requests and a reload run afterwards comes back from
/// the file and works (a reload parses a config and builds a generation
/// again: code only start-up had run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_pages_are_released_and_come_back_when_used() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let config = |to: &Backend| common::app_test_config(to.addr, "null");
    let mut bin = Binary::serve(&config(&a), |_| {});
    let line = bin
        .wait_lines(1, Duration::from_secs(30), "the start-up release", |l| {
            l.contains("start-up done")
        })
        .await;
    let (before, after) = start_up_figures(&line);
    assert!(
        before > 1.0 && after < before / 2.0,
        "the binary's resident pages: {before} MiB before the release, {after} after: {line}"
    );
    let addr = bin.addr_after("serving HTTP on ").await;
    let http = common::client();
    let url = format!("http://{addr}/");
    for _ in 0..50 {
        assert_eq!(get(&http, &url, "app.test").await.1, "backend a");
    }
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_bbproxy")).unwrap();
    let code = code_resident_kib(bin.child.id(), binary.to_str().unwrap());
    assert!(code > 0, "no resident code found for {}", binary.display());

    std::fs::write(bin.dir.path().join("config.json"), config(&b)).unwrap();
    bin.signal("HUP");
    wait_for(Duration::from_secs(10), "the reloaded config", || async {
        get(&http, &url, "app.test").await.1 == "backend b"
    })
    .await;
    assert!(bin.is_running());
    eprintln!(
        "resident binary pages: {before:.1} MiB before the release, {after:.1} after, code {:.1} MiB after 50 requests",
        code as f64 / 1024.0
    );
}
