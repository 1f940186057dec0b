//! Reading the kernel's ring buffer without busy-waiting (epoll through tokio's `AsyncFd`).
//!
//! The kernel wakes the reader for records that may lead to an alert, at most once per
//! [`WAKEUP_INTERVAL_NS`] per CPU, and not at all for the rest (unless the ring fills): a
//! wakeup costs more than the program that writes the record. So after every pass that
//! found records the reader comes back shortly after, and keeps coming back until a pass
//! later than the kernel's quiet window finds nothing: a record whose wakeup the window
//! swallowed is always read, whenever in the window it came.

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
    /// When the last pass that found records ran.
    last_found: Option<tokio::time::Instant>,
    /// Where every record is also written as received (`audit --record`).
    recorder: Option<io::BufWriter<std::fs::File>>,
    /// Where the kernel reads until when this reader passes by itself (`READER_AWAKE`):
    /// records before then wake nobody.
    awake: Option<aya::maps::Array<MapData, u64>>,
    /// What was last written there.
    awake_until: u64,
}

/// How soon after a pass that found records the reader looks again.
pub const TRAILING_PASS: Duration = Duration::from_nanos(WAKEUP_INTERVAL_NS / 2);
/// How late the reader's timer may fire (tokio's timers tick in milliseconds): the kernel
/// is told the reader passes by itself until its next pass plus this.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);
/// How far past its next pass the reader tells the kernel it passes by itself: one write
/// covers the passes of that long a burst.
pub const WINDOW_AHEAD: Duration = Duration::from_millis(8);
/// How long after the last pass that found records the reader keeps looking: past the
/// kernel's quiet window, with room to spare.
pub const TRAILING_SPAN: Duration = Duration::from_nanos(WAKEUP_INTERVAL_NS * 3 / 2);

/// When to look again without a wakeup, at `now`, after the last pass that found records
/// ran at `last_found`: soon while within [`TRAILING_SPAN`] of it, once more at its end,
/// then not until a wakeup.
fn next_pass(
    now: tokio::time::Instant,
    last_found: Option<tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    let end = last_found? + TRAILING_SPAN;
    (now < end).then(|| (now + TRAILING_PASS).min(end))
}

/// The records of a recording made by [`Capture::record_to`], in order.
pub fn read_recording(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("a record's length is cut short")?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!("a record of {len} bytes is cut short"));
        }
        let (record, tail) = tail.split_at(len);
        out.push(record);
        rest = tail;
    }
    Ok(out)
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
            again: None,
            last_found: None,
            recorder: None,
            awake: None,
            awake_until: 0,
        })
    }

    /// Tells the kernel, through `map` (`READER_AWAKE`), until when this reader passes by
    /// itself while it drains a burst: the kernel's programs then wake it no more (a wakeup
    /// is an interrupt, most of a connect's cost on a virtual machine).
    pub fn tell_passes_to(&mut self, map: aya::maps::Array<MapData, u64>) {
        self.awake = Some(map);
    }

    /// Also writes every record, as received, to `file` (a recording: each record as a
    /// little-endian `u32` length and its bytes). It holds DNS answers and the first bytes
    /// of connections, for bug reports and replay tests; never plaintext records.
    pub fn record_to(&mut self, file: std::fs::File) {
        self.recorder = Some(io::BufWriter::new(file));
    }

    /// Takes every record available now; returns how many.
    pub fn drain(&mut self, mut sink: impl FnMut(Record)) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            // Plaintext records are never written: what apps send stays in memory.
            let plaintext = wire::kind_of(&item) == Some(monitor_common::EventKind::Plaintext);
            if let Some(w) = self.recorder.as_mut().filter(|_| !plaintext) {
                let ok = io::Write::write_all(w, &(item.len() as u32).to_le_bytes())
                    .and_then(|()| io::Write::write_all(w, &item));
                if let Err(e) = ok {
                    log::error!("cannot write the recording: {e}; recording stops");
                    self.recorder = None;
                }
            }
            match wire::decode(&item) {
                Ok(record) => sink(record),
                Err(e) => {
                    self.undecodable += 1;
                    self.first_decode_error.get_or_insert(e);
                }
            }
        }
        self.delivered += n as u64;
        if let Some(Err(e)) = self.recorder.as_mut().map(io::Write::flush) {
            log::error!("cannot write the recording: {e}; recording stops");
            self.recorder = None;
        }
        n
    }

    /// Waits until the kernel signals new data, or the trailing pass is due, then drains.
    pub async fn next_batch(&mut self, mut sink: impl FnMut(Record)) -> io::Result<usize> {
        match self.again {
            Some(at) => {
                tokio::select! {
                    ready = self.ring.readable_mut() => ready?.clear_ready(),
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => self.ring.readable_mut().await?.clear_ready(),
        }
        let n = self.drain(&mut sink);
        let now = tokio::time::Instant::now();
        if n > 0 {
            self.last_found = Some(now);
        }
        self.again = next_pass(now, self.last_found);
        let n = n + self.tell_passes(now, &mut sink);
        Ok(n)
    }

    /// Tells the kernel until when this reader passes by itself (its next pass, plus the
    /// timer's lateness); when it is about to wait for a wakeup, that it does not (and
    /// drains once more after saying so: a record the kernel let through without a
    /// wakeup before then is read now).
    fn tell_passes(&mut self, now: tokio::time::Instant, sink: impl FnMut(Record)) -> usize {
        let Some(map) = self.awake.as_mut() else {
            return 0;
        };
        match self.again {
            Some(at) => {
                let needed = crate::host::clock::boot_ns()
                    + (at.saturating_duration_since(now) + TIMER_SLACK).as_nanos() as u64;
                // Said for several passes at once (a write is a system call; the window
                // is closed explicitly when the passes stop). A failed write only costs
                // wakeups.
                let until = needed + WINDOW_AHEAD.as_nanos() as u64;
                if needed > self.awake_until && map.set(0, until, 0).is_ok() {
                    self.awake_until = until;
                }
                0
            }
            None if self.awake_until != 0 => {
                if map.set(0, 0, 0).is_ok() {
                    self.awake_until = 0;
                }
                let n = self.drain(sink);
                if n > 0 {
                    self.last_found = Some(now);
                    self.again = next_pass(now, self.last_found);
                }
                n
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A record written in the kernel's quiet window after a wakeup wakes nobody: the
    // reader must still come back once the window is over (a snap scope's cgroup was
    // once read only 20 s later, when something else woke the reader).
    #[test]
    fn capture_trailing_passes_cover_the_kernels_quiet_window() {
        let t0 = tokio::time::Instant::now();
        assert_eq!(
            next_pass(t0, None),
            None,
            "nothing found: wait for a wakeup"
        );
        assert_eq!(next_pass(t0, Some(t0)), Some(t0 + TRAILING_PASS));
        // Passes that find nothing keep coming back until the window is over.
        let t1 = t0 + TRAILING_PASS;
        assert_eq!(next_pass(t1, Some(t0)), Some(t1 + TRAILING_PASS));
        let t2 = t1 + TRAILING_PASS;
        assert_eq!(next_pass(t2, Some(t0)), Some(t0 + TRAILING_SPAN));
        assert_eq!(next_pass(t0 + TRAILING_SPAN, Some(t0)), None);
        assert!(TRAILING_SPAN > Duration::from_nanos(WAKEUP_INTERVAL_NS));
    }

    #[test]
    fn recordings_read_back_record_by_record_and_cut_ones_are_errors() {
        let mut bytes = Vec::new();
        for r in [&b"abc"[..], b"", b"defgh"] {
            bytes.extend((r.len() as u32).to_le_bytes());
            bytes.extend(r);
        }
        assert_eq!(
            read_recording(&bytes).unwrap(),
            [&b"abc"[..], b"", b"defgh"]
        );
        assert!(read_recording(&bytes[..bytes.len() - 1]).is_err());
        assert!(read_recording(&[1, 0]).is_err());
        assert_eq!(read_recording(&[]).unwrap(), Vec::<&[u8]>::new());
    }
}
