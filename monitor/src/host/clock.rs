//! Clocks: the kernel programs stamp records with `CLOCK_BOOTTIME`; people read wall-clock
//! time in their own time zone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn boottime() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `CLOCK_BOOTTIME` now, in nanoseconds (the kernel programs' clock).
pub fn boot_ns() -> u64 {
    boottime().as_nanos() as u64
}

/// Wall-clock time now, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Local `(hour, minute, second)` of a wall-clock time.
pub fn local_hms(t: SystemTime) -> (u32, u32, u32) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: a zeroed tm is a valid out-parameter.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; localtime_r is thread-safe.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    (tm.tm_hour as u32, tm.tm_min as u32, tm.tm_sec as u32)
}

/// Local `HH:MM` of epoch milliseconds.
pub fn local_hm_of_ms(ms: u64) -> String {
    let (h, m, _) = local_hms(UNIX_EPOCH + Duration::from_millis(ms));
    format!("{h:02}:{m:02}")
}

/// Converts kernel `CLOCK_BOOTTIME` stamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    boot_epoch: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            boot_epoch: SystemTime::now() - boottime(),
        }
    }

    /// A clock whose boot happened at `boot_epoch` (replaying a recording).
    pub fn booted_at(boot_epoch: SystemTime) -> Self {
        Self { boot_epoch }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot_epoch + Duration::from_nanos(boot_ns)
    }

    pub fn rfc3339(&self, boot_ns: u64) -> String {
        humantime::format_rfc3339_millis(self.wall(boot_ns)).to_string()
    }

    /// Epoch milliseconds of a kernel stamp.
    pub fn epoch_ms(&self, boot_ns: u64) -> u64 {
        self.wall(boot_ns)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Local `HH:MM:SS`.
    pub fn hms(&self, boot_ns: u64) -> String {
        let (h, m, s) = local_hms(self.wall(boot_ns));
        format!("{h:02}:{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_maps_boot_stamps_to_now() {
        let clock = Clock::now();
        let ms = clock.epoch_ms(boot_ns());
        assert!(ms.abs_diff(now_ms()) < 1_000, "{ms} vs {}", now_ms());
        assert_eq!(clock.hms(boot_ns()).len(), 8);
        assert_eq!(local_hm_of_ms(now_ms()).len(), 5);
    }
}
