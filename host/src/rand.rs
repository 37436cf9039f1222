//! A fast non-cryptographic random source for balancing decisions
//! (`host.random`). Per-thread xorshift seeded from the std hasher's random
//! keys, so no lock and no extra dependency.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(crate::clock::monotonic_ns());
    h.finish() | 1
}

/// The next random number of this thread's sequence.
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        // xorshift64*: good enough spread for power-of-two choices.
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}
