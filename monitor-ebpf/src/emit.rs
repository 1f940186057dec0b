//! The one way a program writes a record: count it, reserve it, fill the header, let the
//! caller fill the payload, submit. A full ring buffer is counted, never silent.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns,
    },
    maps::ring_buf::RingBufEntry,
};
use monitor_common::{Counter, Event, EventHeader, EventKind};

use crate::state::{count, EVENTS};

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
        let pid_tgid = bpf_get_current_pid_tgid();
        Self {
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            uid: bpf_get_current_uid_gid() as u32,
            // SAFETY: no arguments.
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        }
    }
}

/// A reserved record whose header is filled; the caller writes the payload through
/// [`Record::data`] and calls [`Record::submit`] on every path.
pub struct Record<T: 'static> {
    entry: RingBufEntry<Event<T>>,
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

    #[inline(always)]
    pub fn submit(self) {
        self.entry.submit(0);
    }
}

/// Counts and reserves one `Event<T>` of `kind` and fills its header; `None` (counted as
/// lost) when the ring buffer is full.
#[inline(always)]
pub fn reserve<T: 'static>(kind: EventKind, origin: Origin) -> Option<Record<T>> {
    count(Counter::Generated);
    let Some(mut entry) = EVENTS.reserve::<Event<T>>(0) else {
        count(Counter::Lost);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size that only this program
    // writes until it is submitted; the header is written through the pointer.
    unsafe {
        core::ptr::addr_of_mut!((*ev).header).write(EventHeader {
            kind: kind as u32,
            tgid: origin.tgid,
            tid: origin.tid,
            uid: origin.uid,
            ts_ns: bpf_ktime_get_boot_ns(),
            cgroup_id: origin.cgroup_id,
        })
    };
    Some(Record { entry })
}

/// Emits one record whose payload is built already (small payloads).
#[inline(always)]
pub fn emit<T: 'static>(kind: EventKind, origin: Origin, data: T) {
    if let Some(mut record) = reserve::<T>(kind, origin) {
        // SAFETY: the payload slot of a reserved record.
        unsafe { record.data().write(data) };
        record.submit();
    }
}
