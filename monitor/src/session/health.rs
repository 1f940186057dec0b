//! How a session is doing: the kernel's counters, and lost records said one way for every
//! sink (the audit logs it, the daemon logs it and tells its subscribers).

use std::time::{Duration, Instant};

use crate::{
    host::clock::now_ms,
    kernel::KernelCounters,
    protocol::{Notice, NoticeKind},
};

/// What [`super::Session::tick`] found.
#[derive(Debug, Clone)]
pub struct Health {
    /// `None` when the counters could not be read.
    pub counters: Option<KernelCounters>,
    /// Records were lost since the last notice (and the last one is old enough).
    pub loss: Option<Notice>,
}

/// Says when kernel records were lost, at most once per [`LossReporter::EVERY`], with the
/// number lost since it last spoke.
#[derive(Debug, Default)]
pub struct LossReporter {
    reported: u64,
    last: Option<Instant>,
}

impl LossReporter {
    pub const EVERY: Duration = crate::defaults::LOSS_NOTICE_EVERY;

    /// A notice if `lost` (the kernel's running total) grew and the last one is old enough.
    pub fn check(&mut self, lost: u64) -> Option<Notice> {
        if lost <= self.reported || self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        let new = lost - self.reported;
        self.reported = lost;
        self.last = Some(Instant::now());
        Some(Notice {
            kind: NoticeKind::RecordsLost,
            message: format!(
                "{new} kernel records lost ({lost} since start): some connections of watched apps were not seen; the ring buffer is too small for this load (--ring-size)"
            ),
            ts_ms: now_ms(),
        })
    }
}
