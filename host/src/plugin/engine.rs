//! The process's WebAssembly engine: configuration, the epoch ticker that
//! bounds every call, the linker with the host interface, and a compile cache
//! keyed by content hash so an unchanged file is never compiled twice; with
//! `plugins.cache_dir`, also not after a restart.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Cache as DiskCache, CacheConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use super::LoadError;
use super::bindings;
use super::shared::SharedState;
use super::state::PluginState;
use super::ticker::{EPOCH_TICK, MIN_EPOCH_TICK};

/// Compiled components kept although the serving generation does not use
/// them: the most recently used ones, so a rollback to the previous version
/// (or an A/B swap back and forth) does not wait for Cranelift again, while
/// a long series of different versions cannot grow the cache without bound.
const SPARE_COMPONENTS: usize = 4;

struct Inner {
    engine: Engine,
    linker: Linker<PluginState>,
    shared: Arc<SharedState>,
    /// Compiled components by SHA-256 of their bytes.
    cache: Mutex<Cache>,
    /// Compilations done (cache misses that compiled).
    compiles: AtomicU64,
    /// Bundled components loaded from their embedded precompiled code.
    precompiled: AtomicU64,
    /// Advances the epoch while guest code runs.
    ticker: Arc<super::ticker::Ticker>,
    /// Idle-instance lists per plugin (see [`RuntimeOptions::workers`]).
    workers: usize,
    /// Compiled code on disk, if `RuntimeOptions::cache_dir` could be used.
    disk: Option<DiskCache>,
}

/// Compiled components by content hash, with the time each was last asked
/// for (a counter, not a clock).
#[derive(Default)]
struct Cache {
    entries: HashMap<[u8; 32], (Component, u64)>,
    uses: u64,
}

/// How the engine allocates instances and where it keeps compiled code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Use wasmtime's pooling allocator (pre-reserved memory and instance
    /// slots, reused with madvise) instead of mmap/munmap per instance.
    /// Measured to make instance replacement only marginally cheaper for our
    /// components (see the README, "Plugin limits and faults"), while it caps
    /// the number of live instances and every memory at a fixed slot size,
    /// so it is off by default.
    pub pooling: Option<Pooling>,
    /// Worker threads calling the plugins: each plugin keeps its idle
    /// instances in one list per worker (see [`crate::per_worker`]); 0 is
    /// taken as 1.
    pub workers: usize,
    /// Keep compiled plugins in this directory (wasmtime's cache: one file
    /// per component, keyed by a hash of its bytes and of the engine's
    /// version and settings), so a restart or another process on the same
    /// directory loads them instead of compiling. A directory that cannot be
    /// created is logged and the engine compiles as without one.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch ticker advances the engine's epoch, which is the
    /// granularity of every plugin call's deadline (see `ticker`): `None` is
    /// [`EPOCH_TICK`] (1 ms). A shorter tick ends a runaway call sooner
    /// after its budget is spent, at the cost of more ticker wake-ups while
    /// calls run; under [`MIN_EPOCH_TICK`] is refused.
    pub epoch_tick: Option<Duration>,
}

/// What the on-disk cache of compiled plugins did since the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCacheStats {
    /// The directory, as wasmtime resolved it.
    pub dir: PathBuf,
    /// Components loaded from it instead of compiled.
    pub hits: usize,
    /// Components compiled and written to it.
    pub misses: usize,
}

/// Sizes of the pooling allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    /// Component instances (live and idle, all plugins) at once.
    pub instances: u32,
    /// Size of each linear-memory slot; no plugin's `memory_limit` may
    /// exceed it.
    pub max_memory: u64,
}

/// Cheap to clone handle on the engine, linker, shared state and cache.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the engine and starts its epoch ticker thread, which stops by
    /// itself once the engine is dropped (see `ticker`).
    pub fn new() -> Result<Self, LoadError> {
        Self::with_options(RuntimeOptions::default())
    }

    /// Like [`Runtime::new`], with a choice of instance allocator.
    pub fn with_options(options: RuntimeOptions) -> Result<Self, LoadError> {
        let mut config = super::engine_config::base();
        if let Some(p) = options.pooling {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(p.instances)
                // Our components have a handful of core instances and one
                // or two memories and tables each.
                .total_core_instances(p.instances.saturating_mul(8))
                .total_memories(p.instances.saturating_mul(2))
                .total_tables(p.instances.saturating_mul(4))
                .max_memory_size(usize::try_from(p.max_memory).unwrap_or(usize::MAX));
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let disk = options.cache_dir.as_deref().and_then(disk_cache);
        config.cache(disk.clone());
        config.with_custom_code_memory(super::code_memory::custom());
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        super::wasi::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        // All three worlds import the same `types` and `host` interfaces, so
        // the router world's registration serves every role.
        bindings::router::Router::add_to_linker::<PluginState, HasSelf<PluginState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        // 0.2.0 plugins import those same two interfaces at 0.1.1, and the
        // four 0.2.0 ones below.
        bindings::v2::decisions::add_to_linker::<PluginState, HasSelf<PluginState>>(
            &mut linker,
            |s| s,
        )
        .and_then(|()| {
            bindings::v2::candidates::add_to_linker::<PluginState, HasSelf<PluginState>>(
                &mut linker,
                |s| s,
            )
        })
        .and_then(|()| {
            bindings::v2::router_answers::add_to_linker::<PluginState, HasSelf<PluginState>>(
                &mut linker,
                |s| s,
            )
        })
        .and_then(|()| {
            bindings::v2::balancer_answers::add_to_linker::<PluginState, HasSelf<PluginState>>(
                &mut linker,
                |s| s,
            )
        })
        .map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let tick = options.epoch_tick.unwrap_or(EPOCH_TICK);
        if tick < MIN_EPOCH_TICK {
            return Err(LoadError::Engine(format!(
                "an epoch tick of {tick:?} is too short: the shortest is {MIN_EPOCH_TICK:?}"
            )));
        }
        let ticker = super::ticker::spawn(engine.weak(), tick)
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                shared: Arc::new(SharedState::default()),
                cache: Mutex::new(Cache::default()),
                compiles: AtomicU64::new(0),
                precompiled: AtomicU64::new(0),
                ticker,
                workers: options.workers.max(1),
                disk,
            }),
        })
    }

    /// What the on-disk cache did, if there is one.
    pub fn disk_cache(&self) -> Option<DiskCacheStats> {
        self.inner.disk.as_ref().map(|c| DiskCacheStats {
            dir: c.directory().clone(),
            hits: c.cache_hits(),
            misses: c.cache_misses(),
        })
    }

    /// How many idle-instance lists each plugin keeps (one per worker).
    pub(super) fn workers(&self) -> usize {
        self.inner.workers
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Every guest call runs inside `ticker().enter()`: the epoch only
    /// advances while one does.
    pub(super) fn ticker(&self) -> &super::ticker::Ticker {
        &self.inner.ticker
    }

    pub(super) fn linker(&self) -> &Linker<PluginState> {
        &self.inner.linker
    }

    /// Counters and key-value store shared by all plugins.
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.inner.shared
    }

    /// Compiles `bytes` (a component binary, or WAT text), or returns the
    /// cached compilation of identical bytes. Also returns the hex SHA-256.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<(Component, String), LoadError> {
        let compiled = self.compile_bytes(name, bytes);
        // Whatever the outcome: hashing and loading read the embedded bytes.
        super::bundle::release_pages(bytes);
        compiled
    }

    fn compile_bytes(&self, name: &str, bytes: &[u8]) -> Result<(Component, String), LoadError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let hex = hex(&digest);
        {
            let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.uses += 1;
            let now = cache.uses;
            if let Some((c, used)) = cache.entries.get_mut(&digest) {
                *used = now;
                return Ok((c.clone(), hex));
            }
        }
        if let Some(what) = not_webassembly(bytes) {
            return Err(LoadError::NotWebAssembly {
                name: name.to_owned(),
                what,
            });
        }
        let component = match self.load_precompiled(name, bytes) {
            Some(component) => component,
            None => {
                // Compile outside the lock: it takes milliseconds to seconds.
                let component =
                    Component::new(&self.inner.engine, bytes).map_err(|e| LoadError::Compile {
                        name: name.to_owned(),
                        reason: format!("{e:#}"),
                    })?;
                self.inner.compiles.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::telemetry::names::PLUGIN_COMPILES).increment(1);
                component
            }
        };
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.uses += 1;
        let now = cache.uses;
        cache.entries.insert(digest, (component.clone(), now));
        Ok((component, hex))
    }

    /// The default bundle's component `bytes` from the code `build.rs`
    /// precompiled for it, or `None` when `bytes` is no bundled component
    /// or the code does not fit this engine (logged; it is compiled then).
    #[expect(
        unsafe_code,
        reason = "wasmtime's deserialize trusts its input; the one input here is embedded by this binary's own build"
    )]
    fn load_precompiled(&self, name: &str, bytes: &[u8]) -> Option<Component> {
        let code = super::bundle::precompiled(bytes)?;
        // SAFETY: `code` is what `Engine::precompile_component` made of
        // these very bytes in build.rs, embedded in this binary: neither a
        // file nor user input. wasmtime checks its settings and CPU
        // features against this engine's and refuses code that does not
        // fit, which falls back to compiling.
        let engine = &self.inner.engine;
        // In place when it can (`code_memory.rs`), else copied; a failure
        // in place (mprotect refused, say) is tried again as a copy.
        let loaded = match super::code_memory::load(engine, code) {
            Some(Ok(component)) => Ok(component),
            Some(Err(e)) => {
                tracing::debug!("{name}: precompiled code not usable in place ({e:#}); copying it");
                unsafe { Component::deserialize(engine, code) }
            }
            None => unsafe { Component::deserialize(engine, code) },
        };
        match loaded {
            Ok(component) => {
                self.inner.precompiled.fetch_add(1, Ordering::Relaxed);
                Some(component)
            }
            Err(e) => {
                tracing::warn!(
                    "{name}: the default plugin's precompiled code does not fit this engine ({e:#}); compiling it"
                );
                None
            }
        }
    }

    /// Bundled components loaded from their precompiled code.
    pub fn precompiled_loads(&self) -> u64 {
        self.inner.precompiled.load(Ordering::Relaxed)
    }

    /// Components compiled so far; identical bytes compile once.
    pub fn compiles(&self) -> u64 {
        self.inner.compiles.load(Ordering::Relaxed)
    }

    /// Components in the compile cache.
    pub fn cached(&self) -> usize {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    /// Drops compiled components that `live` (hex SHA-256s of what the
    /// serving generation uses) does not name, except the
    /// [`SPARE_COMPONENTS`] most recently used. Generations still finishing
    /// requests hold their own handles, so this never affects them.
    pub fn evict_unused(&self, live: &HashSet<String>) {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut spare: Vec<([u8; 32], u64)> = cache
            .entries
            .iter()
            .filter(|(digest, _)| !live.contains(&hex(digest.as_slice())))
            .map(|(digest, (_, used))| (*digest, *used))
            .collect();
        spare.sort_unstable_by_key(|&(_, used)| std::cmp::Reverse(used));
        for (digest, _) in spare.into_iter().skip(SPARE_COMPONENTS) {
            cache.entries.remove(&digest);
        }
    }
}

/// wasmtime's cache in `dir` (created if missing), or `None`, logged, when
/// it cannot be used: a cache only saves time, so it never stops a start.
fn disk_cache(dir: &Path) -> Option<DiskCache> {
    // wasmtime refuses a relative directory; the config resolves the key
    // against config.json's directory, which is itself relative when the
    // proxy was started with `--config config.json`.
    let dir = &std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut config = CacheConfig::new();
    config.with_directory(dir);
    match DiskCache::new(config) {
        Ok(cache) => {
            tracing::info!("compiled plugins are cached in {}", dir.display());
            Some(cache)
        }
        Err(e) => {
            tracing::warn!(
                "plugins.cache_dir {}: {e:#}; plugins are compiled at every start",
                dir.display()
            );
            None
        }
    }
}

/// What `bytes` is not, said before a parser's detail could be (the text
/// format's "expected '('" says nothing to someone who passed the wrong
/// file). `None` for a WebAssembly binary (`\0asm`) or text (which wasmtime
/// also compiles): those go to the parser.
fn not_webassembly(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return Some("empty file, not a WebAssembly component".to_owned());
    }
    if bytes.starts_with(b"\0asm") {
        return None;
    }
    let text = bytes.trim_ascii_start();
    if text.starts_with(b"(") || text.starts_with(b";;") {
        return None;
    }
    let head: String = bytes
        .iter()
        .take(8)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    Some(format!(
        "not a WebAssembly binary: it does not start with \\0asm (it starts with \"{head}\"); build the plugin for wasm32-wasip2 and pass the .wasm cargo wrote"
    ))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bundle;

    /// The epoch tick is the runtime's own: 1 ms unless given, a shorter one
    /// taken, one under the minimum refused with the reason.
    #[test]
    fn the_epoch_tick_is_chosen_within_bounds() {
        let with = |tick| {
            Runtime::with_options(RuntimeOptions {
                epoch_tick: tick,
                ..RuntimeOptions::default()
            })
        };
        assert_eq!(Runtime::new().unwrap().ticker().tick(), EPOCH_TICK);
        let short = Duration::from_micros(100);
        assert_eq!(with(Some(short)).unwrap().ticker().tick(), short);
        assert_eq!(
            with(Some(MIN_EPOCH_TICK)).unwrap().ticker().tick(),
            MIN_EPOCH_TICK
        );
        let err = with(Some(Duration::from_micros(10)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10µs is too short") && err.contains("50µs"),
            "{err}"
        );
    }

    /// The default bundle comes precompiled (build.rs): loading it runs no
    /// Cranelift, with the default engine and with the pooling allocator.
    /// A copy of a bundled component loaded from elsewhere is the same
    /// component; other bytes still compile.
    #[test]
    fn the_default_bundle_loads_from_its_precompiled_code() {
        let pooling = Pooling {
            instances: 64,
            max_memory: 64 << 20,
        };
        for options in [
            RuntimeOptions::default(),
            RuntimeOptions {
                pooling: Some(pooling),
                ..RuntimeOptions::default()
            },
        ] {
            let rt = Runtime::with_options(options.clone()).unwrap();
            for (name, bytes) in [
                ("router", bundle::ROUTER),
                ("balancer", bundle::BALANCER),
                ("breaker", bundle::BREAKER.to_vec().as_slice()),
            ] {
                rt.compile(name, bytes).unwrap();
            }
            assert_eq!(rt.compiles(), 0, "{options:?}");
            assert_eq!(rt.precompiled_loads(), 3, "{options:?}");
            rt.compile("wat", b"(component)").unwrap();
            assert_eq!(rt.compiles(), 1, "{options:?}");
        }
    }

    /// `bbproxy --config config.json` with `"cache_dir": "cache"` gives the
    /// engine a relative path, which wasmtime alone refuses ("has to be
    /// absolute").
    #[test]
    fn a_relative_cache_dir_is_used_from_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count());
        let relative = PathBuf::from(up).join(dir.path().strip_prefix("/").unwrap());
        assert!(relative.is_relative());
        assert!(disk_cache(&relative.join("cache")).is_some());
    }

    const WAT: &str = "(component)";

    #[test]
    fn identical_bytes_compile_once() {
        let rt = Runtime::new().unwrap();
        let (_, a) = rt.compile("a", WAT.as_bytes()).unwrap();
        let (_, b) = rt.compile("b", WAT.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(rt.compiles(), 1);
        rt.compile("c", b"(component (core module))").unwrap();
        assert_eq!(rt.compiles(), 2);
    }

    #[test]
    fn unused_components_beyond_the_spares_are_evicted() {
        let rt = Runtime::new().unwrap();
        let texts: Vec<String> = (0..SPARE_COMPONENTS + 3)
            .map(|i| format!("(component (core module (func (export \"f{i}\"))))"))
            .collect();
        let digests: Vec<String> = texts
            .iter()
            .map(|t| rt.compile("x", t.as_bytes()).unwrap().1)
            .collect();
        assert_eq!(rt.cached(), texts.len());
        // The first is live; of the others only the most recent spares stay.
        let live: HashSet<String> = [digests[0].clone()].into();
        rt.evict_unused(&live);
        assert_eq!(rt.cached(), 1 + SPARE_COMPONENTS);
        let before = rt.compiles();
        rt.compile("x", texts[0].as_bytes()).unwrap();
        rt.compile("x", texts.last().unwrap().as_bytes()).unwrap();
        assert_eq!(rt.compiles(), before, "live and recent ones are cached");
        rt.compile("x", texts[1].as_bytes()).unwrap();
        assert_eq!(rt.compiles(), before + 1, "an old unused one was evicted");
    }
}
