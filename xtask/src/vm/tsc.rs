//! The host's TSC frequency, handed to a TCG guest as `tsc_early_khz=`.
//!
//! Under TCG the guest's `rdtsc` reads the host's TSC, but the guest kernel (no ACPI, so no
//! PM timer or HPET as reference) calibrates it against the emulated PIT, which fails or
//! drifts when the host is busy; it then falls back to the jiffies clocksource and every
//! clock in the guest (clock_gettime, bpf_ktime_get_ns) ticks in 4 ms steps. Telling it the
//! frequency skips that calibration.
use std::time::{Duration, Instant};

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64 (it only reads the time-stamp counter).
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// The host TSC frequency in kHz, measured against the monotonic clock (median of 3 x 30 ms),
/// or None when the host does not have a constant, non-stop TSC.
pub fn host_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if !(has("constant_tsc") && has("nonstop_tsc")) {
        return None;
    }
    let mut samples: Vec<u64> = (0..3)
        .filter_map(|_| {
            let (t0, c0) = (Instant::now(), rdtsc());
            std::thread::sleep(Duration::from_millis(30));
            let (c1, t1) = (rdtsc(), Instant::now());
            let nanos = t1.duration_since(t0).as_nanos() as u64;
            (nanos > 0).then(|| c1.wrapping_sub(c0).saturating_mul(1_000_000) / nanos)
        })
        .collect();
    samples.sort_unstable();
    samples.get(1).copied().filter(|&khz| khz > 100_000)
}
