//! The default bundle's precompiled code run where the binary embeds it,
//! not from a copy. wasmtime's `Component::deserialize` copies an artifact
//! into anonymous memory, all of it resident for the process's life: the
//! bundle's 4.1 MB (the router's 3.3 MB of it) were 3.2 MiB of RSS.
//! `Component::deserialize_raw` uses the bytes in place: they are pages of
//! the binary's read-only file mapping, made executable where wasmtime's
//! text section lies, and only the pages a call runs are resident (clean
//! file pages: the kernel can drop and re-read them).
//!
//! In-place code needs wasmtime's custom code memory (it cannot change the
//! protection of memory it did not map): [`Protect`] does what wasmtime
//! does by default, `mprotect`, for every artifact of the engine. Only on
//! x86-64 Linux, where no instruction-cache maintenance is needed after
//! code is written and the page size is the 4 KiB the artifact is aligned
//! to; elsewhere the bundle is copied as before.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::component::Component;
use wasmtime::{CustomCodeMemory, Engine};

/// The page size the embedded artifacts are aligned to, and the only one
/// in-place code is used with.
pub(super) const ALIGN: usize = 4096;

/// Bytes at a page boundary: an artifact's text section is page-aligned
/// within it, so the artifact must start at one to run in place.
#[repr(C, align(4096))]
pub struct PageAligned<T: ?Sized>(pub T);

/// The engine's code memory for in-place code, where it can be used.
pub(super) fn custom() -> Option<Arc<dyn CustomCodeMemory>> {
    supported().then(|| Arc::new(Protect) as Arc<dyn CustomCodeMemory>)
}

/// Whether this process can run code in place.
fn supported() -> bool {
    cfg!(all(target_os = "linux", target_arch = "x86_64")) && rustix::param::page_size() == ALIGN
}

/// `code` as the in-place deserialization takes it, when it can: an engine
/// with [`custom`] code memory and `code` at a page boundary.
fn in_place(code: &'static [u8]) -> Option<NonNull<[u8]>> {
    (supported() && (code.as_ptr() as usize).is_multiple_of(ALIGN) && !code.is_empty())
        .then(|| NonNull::from(code))
}

/// The components loaded in place, by the address of their artifact, kept
/// for the process's life. wasmtime registers each loaded artifact's code
/// range process-wide (to tell a trap in wasm from a crash) and removes it
/// when that load is dropped: a second load of the same bytes would
/// register the same range again, which wasmtime refuses with a panic, and
/// dropping either would unregister the other's code. So an artifact is
/// loaded in place once, and that load is never dropped.
static LOADED: Mutex<Vec<(usize, Component)>> = Mutex::new(Vec::new());

/// `code` loaded in place for `engine`: the load made before, if it was
/// for this engine, or a new one if there was none. `None` when `code`
/// cannot run in place here or another engine runs it (tests make many):
/// then it is copied.
#[expect(
    unsafe_code,
    reason = "wasmtime's deserialize_raw trusts its input; the one input here is embedded by this binary's own build"
)]
pub(super) fn load(engine: &Engine, code: &'static [u8]) -> Option<wasmtime::Result<Component>> {
    let memory = in_place(code)?;
    let at = code.as_ptr() as usize;
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, c)) = loaded.iter().find(|(a, _)| *a == at) {
        return Engine::same(c.engine(), engine).then(|| Ok(c.clone()));
    }
    // SAFETY: `code` is what `Engine::precompile_component` made in
    // build.rs, embedded in this binary (neither a file nor user input;
    // wasmtime checks it fits this engine), and a static: it outlives the
    // component and nothing writes to it.
    let result = unsafe { Component::deserialize_raw(engine, memory) };
    if let Ok(c) = &result {
        loaded.push((at, c.clone()));
    }
    Some(result)
}

/// `mprotect` to read and execute, as wasmtime's own code memory publishes
/// code on x86-64.
#[derive(Debug)]
struct Protect;

impl CustomCodeMemory for Protect {
    fn required_alignment(&self) -> usize {
        ALIGN
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        protect(
            ptr,
            len,
            rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::EXEC,
        )
    }

    /// Leaves the code executable. wasmtime unpublishes an artifact when
    /// it drops it (its own code memory skips that: the mapping is unmapped
    /// next) or to patch code (debugging features the proxy does not turn
    /// on). Code in place may be run by another component at the same
    /// time: a reload that loads the bundle again while an older
    /// generation, finishing its requests, still holds the first load.
    /// Making the pages non-executable under it would crash it.
    fn unpublish_executable(&self, _ptr: *const u8, _len: usize) -> wasmtime::Result<()> {
        Ok(())
    }
}

#[expect(
    unsafe_code,
    reason = "mprotect of a code region wasmtime hands over, as its own code memory does"
)]
fn protect(ptr: *const u8, len: usize, flags: rustix::mm::MprotectFlags) -> wasmtime::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: wasmtime passes the text section of an artifact it loaded,
    // page-aligned (`required_alignment`), before any code runs from it.
    // For an artifact in place, that is a range of the binary's private
    // read-only file mapping (another load of the same artifact may run
    // from it already: it is executable then, and stays so): making it
    // executable changes no byte.
    unsafe { rustix::mm::mprotect(ptr.cast_mut().cast(), len, flags) }
        .map_err(|e| wasmtime::Error::msg(format!("mprotect of plugin code: {e}")))
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod tests {
    use super::super::{Runtime, bundle};

    /// The ranges of this process's mappings with permissions `perms`
    /// (`/proc/self/maps` lines are `smaps` header lines).
    fn mappings(perms: &str) -> Vec<(usize, usize)> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter_map(crate::residency::mapping)
            .filter(|(_, p, ..)| *p == perms)
            .map(|(r, ..)| (r.start, r.end))
            .collect()
    }

    /// Loaded, the default router's code is executable where the binary
    /// embeds it: a range inside the embedded artifact is mapped
    /// read-execute (a copy would leave it read-only). Every test that
    /// proxies through the default bundle runs code from there.
    #[test]
    fn the_bundles_code_runs_where_the_binary_embeds_it() {
        let code = bundle::precompiled(bundle::ROUTER).expect("build.rs precompiled the router");
        let (start, end) = (code.as_ptr() as usize, code.as_ptr() as usize + code.len());
        let runtime = Runtime::new().unwrap();
        runtime.compile("router", bundle::ROUTER).unwrap();
        assert!(runtime.precompiled_loads() >= 1);
        let inside = mappings("r-xp")
            .into_iter()
            .filter(|(s, e)| *s >= start && *e <= end)
            .count();
        assert_eq!(inside, 1, "executable mappings inside the router's code");
    }

    /// One load in place per artifact for the process (other tests of this
    /// process load the bundle too, with engines of their own): loading
    /// it again for the engine that has it gives that load back (a second
    /// would register the same code range with wasmtime again, which it
    /// refuses with a panic); any other engine gets `None` and copies.
    #[test]
    fn an_artifact_is_loaded_in_place_once() {
        let code = bundle::precompiled(bundle::ROUTER).expect("build.rs precompiled the router");
        let runtime = Runtime::new().unwrap();
        runtime.compile("router", bundle::ROUTER).unwrap();
        let at = code.as_ptr() as usize;
        let first = {
            let loaded = super::LOADED.lock().unwrap();
            let mine: Vec<_> = loaded.iter().filter(|(a, _)| *a == at).collect();
            assert_eq!(mine.len(), 1);
            mine[0].1.clone()
        };
        let again = super::load(first.engine(), code).unwrap().unwrap();
        assert!(again.image_range() == first.image_range());
        let other = Runtime::new().unwrap();
        assert!(super::load(other.engine(), code).is_none());
        other.compile("router", bundle::ROUTER).unwrap();
        let loaded = super::LOADED.lock().unwrap();
        assert_eq!(loaded.iter().filter(|(a, _)| *a == at).count(), 1);
    }
}
