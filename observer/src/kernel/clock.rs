//! The kernel stamps flows with `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE: the tick
//! the kernel already keeps, a few ms of resolution, no clock-source read, ~25 ns cheaper per
//! packet than the boot clock); this turns those stamps into wall time.

use std::time::{Duration, SystemTime};

/// Now on the eBPF programs' clock (CLOCK_MONOTONIC_COARSE), in nanoseconds.
pub fn kernel_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The wall time of a kernel stamp.
pub fn wall_of(stamp: u64) -> SystemTime {
    let now = kernel_ns();
    let wall = SystemTime::now();
    if stamp <= now {
        wall - Duration::from_nanos(now - stamp)
    } else {
        wall + Duration::from_nanos(stamp - now)
    }
}

/// RFC 3339 UTC with milliseconds (jiff), e.g. `2026-11-25T00:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    // Truncated to the millisecond, always with three digits.
    format!("{ts:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_564_800_123);
        assert_eq!(rfc3339(t), "2026-11-25T00:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
