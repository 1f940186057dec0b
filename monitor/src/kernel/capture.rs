//! Reading the kernel's ring buffer without busy-waiting (epoll through tokio's `AsyncFd`).
//!
//! The kernel wakes the reader for records that may lead to an alert, at most once per
//! [`WAKEUP_INTERVAL_NS`] per CPU, and not at all for the rest (unless the ring fills): a
//! wakeup costs more than the program that writes the record. So after every pass that
//! found records the reader comes back once more shortly after, and nothing waits longer
//! than that.

use std::{io, time::Duration};

use monitor_common::WAKEUP_INTERVAL_NS;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::wire::{self, DecodeError, Record};

/// Consumer side of the ring buffer, with counts for the loss invariant.
pub struct Capture {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Records taken out of the ring buffer (decodable or not).
    pub delivered: u64,
    /// Records that did not decode (counted, the first error kept).
    pub undecodable: u64,
    pub first_decode_error: Option<DecodeError>,
    /// When to look again without a wakeup (after a pass that found records).
    again: Option<tokio::time::Instant>,
}

/// How soon after a pass that found records the reader looks again.
pub const TRAILING_PASS: Duration = Duration::from_nanos(WAKEUP_INTERVAL_NS / 2);

impl Capture {
    /// Must be called inside a tokio runtime with I/O enabled.
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        Ok(Self {
            // SAFETY: the RingBuf owns its map fd and keeps it open and unreplaced for as
            // long as the AsyncFd (which owns the RingBuf) lives.
            ring: unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)? },
            delivered: 0,
            undecodable: 0,
            first_decode_error: None,
            again: None,
        })
    }

    /// Takes every record available now; returns how many.
    pub fn drain(&mut self, mut sink: impl FnMut(Record)) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            match wire::decode(&item) {
                Ok(record) => sink(record),
                Err(e) => {
                    self.undecodable += 1;
                    self.first_decode_error.get_or_insert(e);
                }
            }
        }
        self.delivered += n as u64;
        n
    }

    /// Waits until the kernel signals new data, or the trailing pass is due, then drains.
    pub async fn next_batch(&mut self, sink: impl FnMut(Record)) -> io::Result<usize> {
        match self.again {
            Some(at) => {
                tokio::select! {
                    ready = self.ring.readable_mut() => ready?.clear_ready(),
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => self.ring.readable_mut().await?.clear_ready(),
        }
        let n = self.drain(sink);
        self.again = (n > 0).then(|| tokio::time::Instant::now() + TRAILING_PASS);
        Ok(n)
    }
}
