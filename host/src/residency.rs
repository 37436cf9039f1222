//! Pages of the binary's own read-only file mapping handed back to the
//! kernel once they are no longer needed: the embedded plugin bundle after
//! it is loaded, and the code and read-only data that starting up touched.
//! They are clean pages of a private file mapping that is never written:
//! `MADV_DONTNEED` drops this process's resident copies, the mapping stays,
//! and a later read faults the same bytes back in from the page cache. So
//! the resident set is the code a running proxy uses, not every path it
//! took once (config parsing, the plugin runtime's set-up, the CLI). On
//! 2026-12-05 (`dist` build): 12.3 MiB of the binary resident when it
//! started serving, 0.8 MiB after the release, and 8.6 MiB back under
//! `bench/run.sh`'s h1 load (the page cache hands a fault a whole large
//! folio, so more comes back than the code that runs).

/// A page range of a mapping, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Drops the resident copies of the pages wholly inside `bytes`, a static
/// in the binary's read-only file mapping.
pub fn drop_resident(bytes: &'static [u8]) {
    let page = rustix::param::page_size();
    let start = bytes.as_ptr() as usize;
    let first = start.div_ceil(page) * page;
    let last = (start + bytes.len()) / page * page;
    if last > first {
        advise(Range {
            start: first,
            end: last,
        });
    }
}

/// Drops the resident pages of the binary's code and of the read-only data
/// mapped before it (headers, `.rodata`); returns the bytes of the binary
/// that were resident before and after, from `/proc/self/smaps`. For a
/// process that has started up: what it runs from now on faults back in.
/// A mapping holding any page this process wrote is left alone, wherever
/// it lies: the dynamic loader wrote relocations into the RELRO data
/// (`.got`, `.data.rel.ro`) before making it read-only, and dropping those
/// private copies would lose them. A binary laid out again by BOLT has its
/// code after the RELRO data, not before it.
pub fn release_start_up_pages() -> std::io::Result<(u64, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let ranges = releasable(&smaps, release_start_up_pages as *const () as usize);
    let before = resident(&smaps, &ranges);
    for r in &ranges {
        advise(*r);
    }
    let after = resident(&std::fs::read_to_string("/proc/self/smaps")?, &ranges);
    Ok((before, after))
}

/// The mappings of `smaps` to release, given `code`, an address in the
/// binary's code: the executable mapping holding it, and the read-only
/// mappings of the same file (device and inode) that end before it; of
/// those, only the ones with no private copy of a page (`Anonymous: 0 kB`),
/// so that every byte dropped is the file's own and comes back unchanged.
fn releasable(smaps: &str, code: usize) -> Vec<Range> {
    let maps = mappings(smaps);
    let Some(text) = maps.iter().find(|m| {
        m.range.start <= code && code < m.range.end && m.perms == "r-xp" && m.inode != "0"
    }) else {
        return Vec::new();
    };
    maps.iter()
        .filter(|m| {
            m.dev == text.dev
                && m.inode == text.inode
                && m.anonymous_kib == Some(0)
                && (m.range == text.range || (m.perms == "r--p" && m.range.end <= text.range.start))
        })
        .map(|m| m.range)
        .collect()
}

/// One mapping of `smaps`: its header line and the fields read from it.
struct Mapping<'a> {
    range: Range,
    perms: &'a str,
    dev: &'a str,
    inode: &'a str,
    rss_kib: u64,
    /// `None` when the kernel did not report it: then nothing is known to
    /// be clean.
    anonymous_kib: Option<u64>,
}

/// The mappings of `smaps`, each with its `Rss` and `Anonymous` fields.
fn mappings(smaps: &str) -> Vec<Mapping<'_>> {
    let mut maps: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        if let Some((range, perms, dev, inode)) = mapping(line) {
            maps.push(Mapping {
                range,
                perms,
                dev,
                inode,
                rss_kib: 0,
                anonymous_kib: None,
            });
        } else if let Some(m) = maps.last_mut() {
            if let Some(kib) = kib_field(line, "Rss:") {
                m.rss_kib = kib;
            } else if let Some(kib) = kib_field(line, "Anonymous:") {
                m.anonymous_kib = Some(kib);
            }
        }
    }
    maps
}

/// The value of a `Name:   123 kB` line of `smaps` named `name`.
fn kib_field(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// A header line of `smaps` (`start-end perms offset dev inode [path]`):
/// its range, permissions, device and inode.
pub(crate) fn mapping(line: &str) -> Option<(Range, &str, &str, &str)> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let range = Range {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
    };
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let dev = fields.next()?;
    let inode = fields.next()?;
    (perms.len() == 4 && dev.contains(':')).then_some((range, perms, dev, inode))
}

/// The `Rss` of the mappings of `smaps` that are in `ranges`, in bytes.
fn resident(smaps: &str, ranges: &[Range]) -> u64 {
    mappings(smaps)
        .iter()
        .filter(|m| ranges.contains(&m.range))
        .map(|m| m.rss_kib * 1024)
        .sum()
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "madvise on the binary's read-only mapping: it stays mapped and its contents unchanged"
)]
fn advise(r: Range) {
    // SAFETY: `r` is page-aligned and lies inside a private, read-only
    // file mapping of this binary that nothing writes (code, `.rodata`,
    // an `include_bytes!` static). MADV_DONTNEED only drops the resident
    // copies of those pages: the mapping stays, and the next access faults
    // the same bytes back in from the file. A failure (a kernel without
    // it) leaves the pages resident, as before.
    let _ = unsafe {
        rustix::mm::madvise(
            r.start as *mut std::ffi::c_void,
            r.end - r.start,
            rustix::mm::Advice::LinuxDontNeed,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn advise(_r: Range) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout lld gives a PIE binary (read-only data, code, RELRO,
    /// data), another file's code and an anonymous code mapping (wasm).
    const SMAPS: &str = "\
555500000000-555500b58000 r--p 00000000 fe:00 1001 /usr/bin/bbproxy
Size:              11616 kB
Rss:                2836 kB
Anonymous:             0 kB
555500b58000-5555021d5000 r-xp 00b57000 fe:00 1001 /usr/bin/bbproxy
Size:              23028 kB
Rss:                9396 kB
Anonymous:             0 kB
5555021d5000-555502277000 r--p 021d3000 fe:00 1001 /usr/bin/bbproxy
Rss:                 648 kB
Anonymous:           640 kB
555502277000-555502280000 rw-p 02274000 fe:00 1001 /usr/bin/bbproxy
Rss:                  36 kB
Anonymous:            36 kB
7f0000000000-7f0000200000 r-xp 00000000 00:00 0
Rss:                2128 kB
Anonymous:          2128 kB
7f1000000000-7f1000100000 r--p 00000000 fe:00 2002 /usr/lib/libc.so.6
Rss:                 192 kB
Anonymous:             0 kB
7f1000100000-7f1000200000 r-xp 00100000 fe:00 2002 /usr/lib/libc.so.6
Rss:                1000 kB
Anonymous:             0 kB
";

    /// The same binary laid out again by BOLT: its mappings as in [`SMAPS`]
    /// (the original code stays where it was), then the code that runs, in
    /// a new segment after the data, so the RELRO mapping (written by the
    /// loader) ends before it.
    fn bolted() -> String {
        let binary: String = SMAPS
            .lines()
            .take_while(|l| !l.starts_with("7f0000000000"))
            .map(|l| format!("{l}\n"))
            .collect();
        binary
            + "555502400000-555503f04000 r-xp 02400000 fe:00 1001 /usr/bin/bbproxy\n\
               Rss:                1200 kB\n\
               Anonymous:             0 kB\n"
    }

    fn range(start: usize, end: usize) -> Range {
        Range { start, end }
    }

    #[test]
    fn the_code_and_the_read_only_data_before_it_are_released_not_relro() {
        let ranges = releasable(SMAPS, 0x5555_0100_0000);
        assert_eq!(
            ranges,
            vec![
                range(0x5555_0000_0000, 0x5555_00b5_8000),
                range(0x5555_00b5_8000, 0x5555_021d_5000)
            ]
        );
        assert_eq!(resident(SMAPS, &ranges), (2836 + 9396) * 1024);
    }

    #[test]
    fn pages_the_process_wrote_are_never_released_even_before_the_code() {
        let bolted = bolted();
        let ranges = releasable(&bolted, 0x5555_0300_0000);
        assert_eq!(
            ranges,
            vec![
                range(0x5555_0000_0000, 0x5555_00b5_8000),
                range(0x5555_0240_0000, 0x5555_03f0_4000)
            ]
        );
        assert_eq!(resident(&bolted, &ranges), (2836 + 1200) * 1024);
        // Without the Anonymous field nothing is known to be clean.
        let unreported: String = SMAPS
            .lines()
            .filter(|l| !l.starts_with("Anonymous:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(releasable(&unreported, 0x5555_0100_0000), Vec::new());
    }

    #[test]
    fn only_code_of_a_file_is_ever_released() {
        // An address in libc's code: libc's own mappings.
        assert_eq!(
            releasable(SMAPS, 0x7f10_0010_0000),
            vec![
                range(0x7f10_0000_0000, 0x7f10_0010_0000),
                range(0x7f10_0010_0000, 0x7f10_0020_0000)
            ]
        );
        // Anonymous code (compiled wasm), RELRO, data, nothing mapped.
        for addr in [0x7f00_0000_1000, 0x5555_021d_6000, 0x5555_0227_8000, 0x1000] {
            assert_eq!(releasable(SMAPS, addr), Vec::new(), "{addr:#x}");
        }
    }

    #[test]
    fn this_process_code_is_found() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let ranges = releasable(&smaps, release_start_up_pages as *const () as usize);
        assert!(!ranges.is_empty(), "{smaps}");
        assert!(resident(&smaps, &ranges) > 0);
    }
}
