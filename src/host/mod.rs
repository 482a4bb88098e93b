//! The machine mesura runs on, as more than one part sees it: its clock (which
//! stamps readings) and its disks (the `system` device reports their usage, the
//! disk guard acts on it).

pub mod clock;
pub mod memory;

use std::path::Path;

/// Space on the filesystem holding a path, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub total: u64,
    /// Used by anyone (total − free).
    pub used: u64,
    /// Available to an unprivileged user (free minus the root reserve).
    pub available: u64,
}

impl DiskUsage {
    /// As `df` shows Use%: used / (used + available); the root reserve counts as
    /// neither, so a full disk is 100 % when an ordinary user can write no more.
    pub fn used_percent(&self) -> Option<f64> {
        let base = self.used + self.available;
        (base > 0).then(|| self.used as f64 * 100.0 / base as f64)
    }
}

/// statvfs(2) of `path`.
// The counts are u32 on 32-bit ARM (a Pi with a 32-bit OS) and u64 elsewhere.
#[allow(clippy::useless_conversion)]
pub fn disk_usage(path: &Path) -> std::io::Result<DiskUsage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = u64::from(s.fragment_size());
    let (blocks, free, avail) = (
        u64::from(s.blocks()),
        u64::from(s.blocks_free()),
        u64::from(s.blocks_available()),
    );
    Ok(DiskUsage {
        total: blocks.saturating_mul(frag),
        used: blocks.saturating_sub(free).saturating_mul(frag),
        available: avail.saturating_mul(frag),
    })
}
