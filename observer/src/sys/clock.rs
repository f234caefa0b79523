//! One clock for every event: CLOCK_BOOTTIME, the clock of `bpf_ktime_get_boot_ns()`.
use nix::time::{ClockId, clock_gettime};

/// Nanoseconds of CLOCK_BOOTTIME now.
pub fn boot_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch now.
pub fn realtime_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Offset to add to a CLOCK_BOOTTIME stamp to get Unix time (nanoseconds).
pub fn boot_to_unix_offset_ns() -> i128 {
    i128::from(realtime_ns()) - i128::from(boot_ns())
}

/// Local wall-clock `HH:MM:SS.mmm` of a CLOCK_BOOTTIME stamp, for human output.
pub fn wall_time_of(boot_ns: u64, offset_ns: i128) -> String {
    let unix_ns = i128::from(boot_ns) + offset_ns;
    let secs = (unix_ns / 1_000_000_000) as i64;
    let millis = ((unix_ns % 1_000_000_000) / 1_000_000) as u32;
    // SAFETY: `tm` is a plain C struct fully written by localtime_r before being read; `secs` is a
    // valid time_t. localtime_r is thread-safe (unlike localtime).
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return format!("{}.{millis:03}", secs);
        }
        tm
    };
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}
