//! Handing back the binary's start-up code once the daemon has settled.
//!
//! Most of mesura's code runs once at start-up (clap, YAML, validation, opening the
//! backends, creating the tables) and stays mapped afterwards: the kernel maps code
//! 64 KiB around each page first touched ("fault-around"), so the whole start-up
//! path, and much around it, stays counted in the process's RSS for good
//! (docs/benchmarks.md, memory). Once settled, [`drop_startup_code`] unmaps the
//! binary's read-only pages, asks for no read-ahead on them (`MADV_RANDOM`) and
//! drops them from the page cache; fault-around maps only pages already cached,
//! so from then on each 4 KiB page the steady state runs comes back alone.
//! `MADV_PAGEOUT` would not do: the kernel pages out file pages only for a process
//! that owns the file or may write it, and the packaged daemon runs as user
//! `mesura` on a root-owned `/usr/bin/mesura`. The pages another process maps (a
//! `mesura check` running at that moment) stay cached.

use std::ops::Range;

/// The address ranges of `exe`'s mappings that hold only the file's own pages:
/// not writable, and no page of them copied into private memory (`Anonymous: 0`).
/// Only those can be unmapped and faulted back from the file unchanged; a
/// relocated (RELRO) or written page would be lost. Parsed from
/// `/proc/self/smaps`; a line that does not parse ends the mapping it is in
/// without selecting it.
pub(crate) fn clean_file_mappings(smaps: &str, exe: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    // The mapping being read: its range, once its header named `exe` read-only.
    let mut current: Option<Range<usize>> = None;
    for line in smaps.lines() {
        if let Some(range) = mapping_header(line) {
            current = range.and_then(|(range, perms, path)| {
                (path == exe && perms.as_bytes().get(1) == Some(&b'-')).then_some(range)
            });
            continue;
        }
        let Some(range) = current.as_ref() else { continue };
        if let Some(value) = line.strip_prefix("Anonymous:") {
            if value.trim() == "0 kB" {
                ranges.push(range.clone());
            }
            current = None;
        }
    }
    ranges
}

/// A smaps header line (`start-end perms offset dev inode [path]`): `Some(None)`
/// for a header that does not parse, `None` for a field line (`Rss: 4 kB`).
#[allow(clippy::option_option)]
fn mapping_header(line: &str) -> Option<Option<(Range<usize>, &str, &str)>> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    // Field lines start with a "Name:" key; headers with a hex range.
    if range.ends_with(':') {
        return None;
    }
    let mut parse = || {
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let perms = fields.next()?;
        let (_offset, _dev, _inode) = (fields.next()?, fields.next()?, fields.next()?);
        // The path may hold spaces ("… (deleted)" after an upgrade).
        let path = line.find(" /").map_or("", |at| &line[at + 1..]);
        (start < end).then_some((start..end, perms, path))
    };
    Some(parse())
}

/// Unmaps the binary's clean read-only pages (code, constants) and turns off
/// fault-around on them, so that only what runs from now on is resident again.
/// Best effort: on any error the pages simply stay mapped.
#[cfg(target_os = "linux")]
pub fn drop_startup_code() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut dropped = 0;
    for range in clean_file_mappings(&smaps, &exe.to_string_lossy()) {
        let len = range.end - range.start;
        let addr = range.start as *mut libc::c_void;
        // SAFETY: the range is a whole mapping of our own binary that is not
        // writable and holds no private (copied) page, as smaps showed a moment
        // ago; nothing in the process writes to read-only mappings. MADV_RANDOM only
        // changes how pages are faulted in. MADV_DONTNEED on such a private file
        // mapping only drops the page-table entries: the next access faults the same
        // bytes back from the file (the page cache), so no content can change.
        let failed = unsafe {
            libc::madvise(addr, len, libc::MADV_RANDOM) != 0 || libc::madvise(addr, len, libc::MADV_DONTNEED) != 0
        };
        if failed {
            return Err(std::io::Error::last_os_error());
        }
        dropped += len;
    }
    // The unmapped pages are still in the page cache, read ahead at start-up in
    // 16–64 KiB folios, and a fault maps a whole folio back: drop them from the
    // cache too (the kernel keeps any page another process maps), so that each
    // page the steady state runs is read back alone (MADV_RANDOM: no read-ahead).
    let exe = std::fs::File::open("/proc/self/exe")?;
    nix::fcntl::posix_fadvise(&exe, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(std::io::Error::from)?;
    Ok(dropped)
}

/// Elsewhere the binary's pages stay as they are.
#[cfg(not(target_os = "linux"))]
pub fn drop_startup_code() -> std::io::Result<usize> {
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5600000000-5600100000 r--p 00000000 fd:01 1234 /usr/bin/mesura
Size:               1024 kB
Rss:                 600 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
5600100000-5600900000 r-xp 00100000 fd:01 1234 /usr/bin/mesura
Size:               8192 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
5600900000-5600980000 r--p 00900000 fd:01 1234 /usr/bin/mesura
Size:                512 kB
Anonymous:           120 kB
VmFlags: rd mr mw me ac sd
5600980000-5600990000 rw-p 00980000 fd:01 1234 /usr/bin/mesura
Anonymous:             0 kB
7f0000000000-7f0000200000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000300000-7f0000400000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
garbage line
7f0000500000-7f0000501000 r-xp 00000000 fd:01 1234 /usr/bin/mesura
Anonymous:             4 kB
";

    #[test]
    fn picks_the_binarys_clean_read_only_mappings() {
        let ranges = clean_file_mappings(SMAPS, "/usr/bin/mesura");
        // Not the RELRO mapping (copied pages), the writable one, libc, the anonymous
        // one, nor code with a private page (a debugger's breakpoint).
        assert_eq!(ranges, vec![0x5600000000..0x5600100000, 0x5600100000..0x5600900000]);
    }

    #[test]
    fn a_deleted_binary_is_still_ours() {
        let smaps = "1000-2000 r-xp 00000000 fd:01 1 /usr/bin/mesura (deleted)\nAnonymous: 0 kB\n";
        assert_eq!(
            clean_file_mappings(smaps, "/usr/bin/mesura (deleted)"),
            vec![0x1000..0x2000]
        );
        assert!(clean_file_mappings(smaps, "/usr/bin/mesura").is_empty());
    }

    #[test]
    fn nothing_from_an_unreadable_header() {
        let smaps = "zz-2000 r-xp 00000000 fd:01 1 /usr/bin/mesura\nAnonymous: 0 kB\n";
        assert!(clean_file_mappings(smaps, "/usr/bin/mesura").is_empty());
    }
}
