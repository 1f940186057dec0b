//! The one way a program writes a record: count it, admit it against its user's budget,
//! reserve it, fill the header, let the caller fill the payload, submit. A refusal and a
//! full ring buffer are counted, never silent.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns,
    },
    maps::ring_buf::RingBufEntry,
};
use monitor_common::{
    Counter, Event, EventHeader, EventKind, READER_AWAKE_MARGIN_NS, WAKEUP_FILL_SHIFT,
    WAKEUP_INTERVAL_NS,
};

use core::mem::size_of;

use crate::{
    budget,
    state::{count, EVENTS, LAST_WAKEUP, READER_AWAKE},
};

/// `bpf_ringbuf_submit` flags and `bpf_ringbuf_query` questions (uapi/linux/bpf.h).
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// The ring's size in bytes, set by userspace before loading (a constant, no helper call).
#[unsafe(no_mangle)]
static RING_BYTES: u64 = monitor_common::RING_BYTES_BUILT_IN as u64;

#[inline(always)]
fn ring_bytes() -> u64 {
    // SAFETY: a volatile read of a read-only global that userspace rewrites before loading.
    unsafe { core::ptr::read_volatile(&RING_BYTES) }
}

/// Who a record is about (the header's identity fields).
#[derive(Clone, Copy)]
pub struct Origin {
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
}

impl Origin {
    /// The task the program runs in (tracepoints and socket hooks: the caller).
    #[inline(always)]
    pub fn current() -> Self {
        Self::of(bpf_get_current_pid_tgid())
    }

    /// The task whose `bpf_get_current_pid_tgid()` is `pid_tgid` (read first, alone, to
    /// decide whether anything else is needed).
    #[inline(always)]
    pub fn of(pid_tgid: u64) -> Self {
        Self::of_ids(pid_tgid, bpf_get_current_uid_gid())
    }

    /// The same, with `bpf_get_current_uid_gid()` read already (each helper call counts in
    /// a program that runs on every connect).
    #[inline(always)]
    pub fn of_ids(pid_tgid: u64, uid_gid: u64) -> Self {
        Self::of_ids_in(pid_tgid, uid_gid, 0)
    }

    /// The same, with the cgroup id too when the caller read it already (the watch check of
    /// a process watched by its cgroup; 0: not read, no cgroup has id 0).
    #[inline(always)]
    pub fn of_ids_in(pid_tgid: u64, uid_gid: u64, cgroup_id: u64) -> Self {
        Self {
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            cgroup_id: if cgroup_id != 0 {
                cgroup_id
            } else {
                // SAFETY: no arguments.
                unsafe { bpf_get_current_cgroup_id() }
            },
        }
    }
}

/// A reserved record whose header is filled; the caller writes the payload through
/// [`Record::data`] and calls [`Record::submit`] on every path.
pub struct Record<T: 'static> {
    entry: RingBufEntry<Event<T>>,
    /// The header's time stamp.
    ts: u64,
}

impl<T: 'static> Record<T> {
    /// The payload, uninitialised: write every field through the pointer (no reference to
    /// the uninitialised memory is made).
    #[inline(always)]
    pub fn data(&mut self) -> *mut T {
        let ev = self.entry.as_mut_ptr();
        // SAFETY: a field projection of the reserved record, no read.
        unsafe { core::ptr::addr_of_mut!((*ev).data) }
    }

    /// Submits a record that may lead to an alert (a connect, the first payload of a
    /// socket): it wakes the reader, at most once per [`WAKEUP_INTERVAL_NS`] per CPU (a
    /// wakeup costs more than the rest of the program; the reader drains again shortly
    /// after any pass that found records).
    #[inline(always)]
    pub fn submit_urgent(self) {
        // The reader is draining a burst and passes again before long by itself: a wakeup
        // (an interrupt, a VM exit on a virtual machine: most of the program's cost) buys
        // nothing.
        // The header's time stamp stands for now: it was taken a few hundred ns ago, far
        // inside the margin (a clock read is one of the program's dearer steps on a VM).
        let now = self.ts;
        let awake_until = READER_AWAKE.get(0).copied().unwrap_or(0);
        if now.saturating_add(READER_AWAKE_MARGIN_NS) < awake_until {
            self.finish(false);
            return;
        }
        let wake = match LAST_WAKEUP.get_ptr_mut(0) {
            Some(last) => {
                // SAFETY: this CPU's slot; only this CPU writes it while this program runs.
                let due = unsafe { now.wrapping_sub(*last) >= WAKEUP_INTERVAL_NS };
                if due {
                    // SAFETY: as above.
                    unsafe { *last = now };
                }
                due
            }
            None => true,
        };
        self.finish(wake);
    }

    /// Submits a record nobody waits for (process lifecycle, DNS answers, later payloads):
    /// the reader takes it on its next pass, or now when the ring is filling up.
    #[inline(always)]
    pub fn submit(self) {
        self.finish(false);
    }

    #[inline(always)]
    fn finish(self, wake: bool) {
        if wake || EVENTS.query(BPF_RB_AVAIL_DATA) > ring_bytes() >> WAKEUP_FILL_SHIFT {
            count(Counter::Wakeups);
            self.entry.submit(BPF_RB_FORCE_WAKEUP);
        } else {
            self.entry.submit(BPF_RB_NO_WAKEUP);
        }
    }
}

/// A record admitted by its user's budget (see `budget`), not yet reserved.
#[derive(Clone, Copy)]
pub struct Ticket {
    ts: u64,
}

/// Counts a record of `kind` that `origin` is about to cause and asks its user's budget
/// for it; `None` (counted) when the user is over budget. Process ends pass whatever the
/// budget.
#[inline(always)]
pub fn admit<T: 'static>(kind: EventKind, origin: &Origin) -> Option<Ticket> {
    admit_or::<T>(kind, origin, || false)
}

/// [`admit`], where a record the budget refuses still passes when `passes()` says so
/// (destinations that may alert, denied calls). `passes` is asked only then: the look-ups
/// behind it cost nothing while the user is within budget.
#[inline(always)]
pub fn admit_or<T: 'static>(
    kind: EventKind,
    origin: &Origin,
    passes: impl FnOnce() -> bool,
) -> Option<Ticket> {
    count(Counter::Generated);
    // SAFETY: no arguments.
    let ts = unsafe { bpf_ktime_get_boot_ns() };
    if kind != EventKind::Exit
        && !budget::admit(origin.uid, size_of::<Event<T>>() as u32, ts, passes)
    {
        return None;
    }
    Some(Ticket { ts })
}

/// Counts, admits and reserves one `Event<T>` of `kind` and fills its header; `None`
/// (counted) when the user is over budget or the ring buffer is full.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind, origin: Origin) -> Option<Record<T>> {
    let ticket = admit::<T>(kind, &origin)?;
    reserve_admitted(ticket, kind, origin)
}

/// Reserves an admitted record and fills its header; `None` (counted as lost) when the
/// ring buffer is full.
#[inline(always)]
pub fn reserve_admitted<T: 'static>(
    ticket: Ticket,
    kind: EventKind,
    origin: Origin,
) -> Option<Record<T>> {
    let Some(mut entry) = EVENTS.reserve::<Event<T>>(0) else {
        count(Counter::Lost);
        return None;
    };
    let ev = entry.as_mut_ptr();
    let ts = ticket.ts;
    // SAFETY: `ev` points at a reserved record of the right size that only this program
    // writes until it is submitted; the header is written through the pointer.
    unsafe {
        core::ptr::addr_of_mut!((*ev).header).write(EventHeader {
            kind: kind as u32,
            tgid: origin.tgid,
            tid: origin.tid,
            uid: origin.uid,
            ts_ns: ts,
            cgroup_id: origin.cgroup_id,
        })
    };
    Some(Record { entry, ts })
}

/// Emits one admitted record whose payload is built already (small payloads); `urgent` as
/// in [`Record::submit_urgent`].
#[inline(always)]
pub fn emit_admitted<T: 'static>(
    ticket: Ticket,
    kind: EventKind,
    origin: Origin,
    data: T,
    urgent: bool,
) {
    if let Some(mut record) = reserve_admitted::<T>(ticket, kind, origin) {
        // SAFETY: the payload slot of a reserved record.
        unsafe { record.data().write(data) };
        if urgent {
            record.submit_urgent();
        } else {
            record.submit();
        }
    }
}

/// Emits one record whose payload is built already, if its user's budget admits it.
#[inline(always)]
pub fn emit<T: 'static>(kind: EventKind, origin: Origin, data: T, urgent: bool) {
    if let Some(ticket) = admit::<T>(kind, &origin) {
        emit_admitted(ticket, kind, origin, data, urgent);
    }
}
