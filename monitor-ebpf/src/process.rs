//! Raw tracepoints on the scheduler's process lifecycle: who is watched, and what
//! userspace must know about each watched process even if it lives for a millisecond.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{
    CommKey, Counter, EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, COMM_LEN, MODE_NAMES,
};

use crate::state::{
    count, offsets, read_field, watch, watched, CONFIG, EVENTS, WATCH_NAMES, WATCH_TGIDS,
};

#[inline(always)]
fn header(kind: EventKind, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid,
        tid,
        uid: bpf_get_current_uid_gid() as u32,
        // SAFETY: helpers without pointer arguments.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    }
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`; runs in the
/// parent. New threads are skipped: they share their process's tgid and so its watch.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn bw_fork(ctx: RawTracePointContext) -> i32 {
    let offs = offsets();
    if offs.valid == 0 {
        return 0;
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(tag) = watched(parent_tgid) else {
        return 0;
    };
    let child: u64 = ctx.arg(1);
    let (Some(child_pid), Some(child_tgid)) = (
        read_field::<u32>(child, offs.task_pid),
        read_field::<u32>(child, offs.task_tgid),
    ) else {
        return 0;
    };
    if child_pid != child_tgid {
        return 0;
    }
    watch(child_tgid, tag);

    count(Counter::Generated);
    let Some(mut entry) = EVENTS.reserve::<ForkEvent>(0) else {
        count(Counter::Lost);
        return 0;
    };
    let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    let ev = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved record.
    unsafe {
        (*ev).header = header(
            EventKind::Fork,
            parent_tgid,
            bpf_get_current_pid_tgid() as u32,
        );
        (*ev).data.child_tgid = child_tgid;
        (*ev).data.watch_tag = tag;
        (*ev).data.comm = comm;
    }
    entry.submit(0);
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`;
/// runs in the process after the new image is in place (its comm is the new name).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn bw_exec(ctx: RawTracePointContext) -> i32 {
    let offs = offsets();
    if offs.valid == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    let tag = match watched(tgid) {
        Some(tag) => tag,
        None => {
            let mode = CONFIG.get(0).map(|c| c.mode).unwrap_or(0);
            if mode & MODE_NAMES == 0 {
                return 0;
            }
            // SAFETY: plain u32 value.
            match unsafe { WATCH_NAMES.get(CommKey { comm }) } {
                Some(tag) => {
                    let tag = *tag;
                    watch(tgid, tag);
                    tag
                }
                None => return 0,
            }
        }
    };

    count(Counter::Generated);
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count(Counter::Lost);
        return 0;
    };
    // SAFETY: returns a pointer value only; dereferenced through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let ppid = read_field::<u64>(task, offs.task_real_parent)
        .and_then(|parent| read_field::<u32>(parent, offs.task_tgid))
        .unwrap_or(0);
    let bprm: u64 = ctx.arg(2);
    let filename_ptr = read_field::<u64>(bprm, offs.binprm_filename).unwrap_or(0);
    let ev = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved record; the string read writes into its own
    // fixed-size array inside it.
    unsafe {
        (*ev).header = header(EventKind::Exec, tgid, pid_tgid as u32);
        (*ev).data.ppid = ppid;
        (*ev).data.watch_tag = tag;
        (*ev).data.comm = comm;
        (*ev).data._pad = 0;
        let dst = &mut (*ev).data.filename;
        dst[0] = 0;
        let len = if filename_ptr != 0 {
            match bpf_probe_read_kernel_str_bytes(filename_ptr as *const u8, dst) {
                Ok(bytes) => bytes.len() as u32,
                Err(_) => 0,
            }
        } else {
            0
        };
        (*ev).data.filename_len = len;
    }
    entry.submit(0);
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`; runs in the exiting thread. A watched
/// process ends when its last thread exits (`signal->live` has dropped to 0 by then), not
/// when its leader does: a leader may `pthread_exit`, and `execve` from another thread
/// makes the leader exit while the process goes on.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn bw_exit(_ctx: RawTracePointContext) -> i32 {
    let offs = offsets();
    if offs.valid == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if watched(tgid).is_none() {
        return 0;
    }
    // SAFETY: pointer value only; dereferenced through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let live = read_field::<u64>(task, offs.task_signal)
        .and_then(|signal| read_field::<i32>(signal, offs.signal_live));
    match live {
        Some(0) => {}
        Some(_) => return 0,
        // Unreadable: fall back to the leader's exit.
        None if pid_tgid as u32 == tgid => {}
        None => return 0,
    }
    let _ = WATCH_TGIDS.remove(tgid);

    count(Counter::Generated);
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count(Counter::Lost);
        return 0;
    };
    let exit_code = read_field::<u32>(task, offs.task_exit_code).unwrap_or(0);
    let ev = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved record.
    unsafe {
        (*ev).header = header(EventKind::Exit, tgid, tgid);
        (*ev).data.exit_code = exit_code;
        (*ev).data._pad = 0;
    }
    entry.submit(0);
    0
}
