//! The per-instance resource caps: linear memory, table elements, and the
//! number of core instances, tables and memories a component may create.
//! Wraps wasmtime's [`StoreLimits`] to remember that it refused a growth, so
//! the trap that usually follows (a guest allocator aborting) is reported as
//! a `memory` fault, not an anonymous `unreachable`.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// Table elements one instance may hold. Rust and C components use a few
/// hundred (indirect calls); this only stops `table.grow` loops.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Core instances one component instance may create. A component built by
/// the usual toolchains has fewer than ten (main module plus adapter shims).
pub const MAX_CORE_INSTANCES: usize = 64;
/// Tables and memories one component instance may create.
pub const MAX_TABLES: usize = 64;
/// Linear memories one component instance may create.
pub const MAX_MEMORIES: usize = 16;

/// Caps of one store, plus whether a growth was refused.
pub struct Limiter {
    inner: StoreLimits,
    denied: bool,
}

impl Limiter {
    /// Caps linear memory (each memory of the instance) at `memory` bytes.
    pub fn new(memory: u64) -> Self {
        Self {
            inner: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(memory).unwrap_or(usize::MAX))
                .table_elements(MAX_TABLE_ELEMENTS)
                .instances(MAX_CORE_INSTANCES)
                .tables(MAX_TABLES)
                .memories(MAX_MEMORIES)
                .build(),
            denied: false,
        }
    }

    /// Whether a memory or table growth was refused since the last call of
    /// this method.
    pub fn take_denied(&mut self) -> bool {
        std::mem::take(&mut self.denied)
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allow = self.inner.memory_growing(current, desired, maximum)?;
        self.denied |= !allow;
        Ok(allow)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allow = self.inner.table_growing(current, desired, maximum)?;
        self.denied |= !allow;
        Ok(allow)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
