//! Reading the kernel's ring buffer without busy-waiting (epoll through tokio's `AsyncFd`).

use std::io;

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
}

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

    /// Waits until the kernel signals new data, then drains it.
    pub async fn next_batch(&mut self, sink: impl FnMut(Record)) -> io::Result<usize> {
        let mut guard = self.ring.readable_mut().await?;
        guard.clear_ready();
        drop(guard);
        Ok(self.drain(sink))
    }
}
