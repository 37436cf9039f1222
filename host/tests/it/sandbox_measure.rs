//! Measurements for the README's "Plugin limits and faults" (not assertions,
//! not run in CI): how closely the epoch deadline stops a looping plugin,
//! and what replacing a faulted instance costs with and without wasmtime's
//! pooling allocator.
//!
//! `cargo test -p bbproxy --test it -- sandbox_measure:: --ignored --nocapture`
//! (add `--release` for numbers closer to production).

use std::time::{Duration, Instant};

use crate::common;

use bbproxy::plugin::{Pooling, Runtime, RuntimeOptions};
use common::direct::{candidates, hostile_balancer, thread_cpu};

fn view() -> Option<Box<bbproxy::plugin::RequestView>> {
    common::direct::view("x.test")
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    format!(
        "p50 {:?}, p99 {:?}, max {:?} (n={})",
        at(50),
        at(99),
        v[v.len() - 1],
        v.len()
    )
}

#[test]
#[ignore = "measurement; run by hand"]
fn deadline_accuracy() {
    let runtime = Runtime::new().unwrap();
    for ms in [1, 5, 10, 50] {
        let timeout = Duration::from_millis(ms);
        let plugin = hostile_balancer(&runtime, "loop", timeout);
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            // A good call first, so the faulting call finds a pooled
            // instance and its time is the loop's alone.
            plugin.pick(&mut view(), 0, &candidates()).unwrap();
            let (start, cpu_start) = (Instant::now(), thread_cpu());
            assert!(plugin.pick(&mut view(), 1, &candidates()).is_err());
            wall.push(start.elapsed());
            cpu.push(thread_cpu() - cpu_start);
        }
        eprintln!(
            "budget {timeout:?}: looping call stopped after CPU {}; wall {}",
            stats(cpu),
            stats(wall)
        );
    }
}

#[test]
#[ignore = "measurement; run by hand"]
fn instance_replacement_cost() {
    let pooled = RuntimeOptions {
        pooling: Some(Pooling {
            instances: 1000,
            max_memory: 16 << 20,
        }),
        ..RuntimeOptions::default()
    };
    for (label, options) in [
        ("on-demand allocator", RuntimeOptions::default()),
        ("pooling allocator", pooled),
    ] {
        let runtime = Runtime::with_options(options).unwrap();
        let good = hostile_balancer(&runtime, "good", Duration::from_millis(10));
        let faulty = hostile_balancer(&runtime, "always-trap", Duration::from_millis(10));
        const N: usize = 3000;
        let mut reuse = Vec::with_capacity(N);
        let mut replace = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            good.pick(&mut view(), 0, &candidates()).unwrap();
            reuse.push(t.elapsed());
            // Every call traps, so every call instantiates and runs `init`
            // on a fresh instance first: the cost of one replacement.
            let t = Instant::now();
            assert!(faulty.pick(&mut view(), 0, &candidates()).is_err());
            replace.push(t.elapsed());
        }
        eprintln!("{label}: call on a pooled instance {}", stats(reuse));
        eprintln!(
            "{label}: fault + replacement (instantiate, init, call, trap, drop) {}",
            stats(replace)
        );
    }
}
