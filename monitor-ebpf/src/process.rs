//! Raw tracepoints on the scheduler's process lifecycle: who is watched, and what
//! userspace must know about each watched process even if it lives for a millisecond.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_task, bpf_probe_read_kernel_str_bytes},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{
    CommKey, EventKind, ExecData, ExitData, ForkData, COMM_LEN, EXE_COMPONENTS, EXE_TRUNCATED,
    EXE_UNKNOWN, MODE_NAMES,
};

use crate::{
    emit::{emit, reserve, Origin},
    state::{koff, mode, offsets_valid, read_field, watch, watched, WATCH_NAMES, WATCH_TGIDS},
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`; runs in the
/// parent. New threads are skipped: they share their process's tgid and so its watch.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn bw_fork(ctx: RawTracePointContext) -> i32 {
    if !offsets_valid() {
        return 0;
    }
    let origin = Origin::current();
    let Some(tag) = watched(origin.tgid) else {
        return 0;
    };
    let child: u64 = ctx.arg(1);
    let (Some(child_pid), Some(child_tgid)) = (
        read_field::<u32>(child, koff!(task_pid)),
        read_field::<u32>(child, koff!(task_tgid)),
    ) else {
        return 0;
    };
    if child_pid != child_tgid {
        return 0;
    }
    watch(child_tgid, tag);
    let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    let data = ForkData {
        child_tgid,
        watch_tag: tag,
        comm,
    };
    emit(EventKind::Fork, origin, data, false);
    0
}

/// Writes the path of the executed file (`bprm->file`) into `data.exe`, leaf first, by
/// walking dentries up to their mount's root and crossing to the parent mount until the
/// root of the mount namespace. Step `i` writes slot `i`: a component, or an empty string
/// for a mount crossing, so that the verifier sees one state per step. Bounded: at most
/// [`EXE_COMPONENTS`] steps; a walk that does not reach the root is marked truncated.
///
/// # Safety
/// `data` points at the payload of a reserved exec record.
#[inline(always)]
unsafe fn exe_path(bprm: u64, data: *mut ExecData) {
    let file = read_field::<u64>(bprm, koff!(binprm_file)).unwrap_or(0);
    let dentry = read_field::<u64>(file, koff!(file_dentry)).unwrap_or(0);
    let vfsmnt = read_field::<u64>(file, koff!(file_mnt)).unwrap_or(0);
    if dentry == 0 || vfsmnt == 0 {
        // SAFETY: the caller's record.
        unsafe {
            (*data).exe_depth = 0;
            (*data).exe_flags = EXE_UNKNOWN;
        }
        return;
    }
    let mount_mnt = koff!(mount_mnt) as u64;
    let mut dentry = dentry;
    let mut mnt = vfsmnt.wrapping_sub(mount_mnt);
    let mut steps = EXE_COMPONENTS as u16;
    let mut flags = EXE_TRUNCATED;
    for i in 0..EXE_COMPONENTS {
        // SAFETY: the caller's record; `i` is below the array's length.
        let slot = unsafe { &mut (*data).exe[i] };
        slot[0] = 0;
        let root = read_field::<u64>(mnt.wrapping_add(mount_mnt), koff!(vfsmount_root));
        let parent = read_field::<u64>(dentry, koff!(dentry_parent));
        let (Some(root), Some(parent)) = (root, parent) else {
            steps = i as u16;
            break;
        };
        if dentry == root || dentry == parent {
            // The root of this mount: continue at its mount point in the parent mount
            // (this step's slot stays empty), or stop at the root of the namespace.
            let up = read_field::<u64>(mnt, koff!(mount_parent)).unwrap_or(mnt);
            if up == mnt || up == 0 {
                flags = 0;
                steps = i as u16;
                break;
            }
            dentry = read_field::<u64>(mnt, koff!(mount_mountpoint)).unwrap_or(0);
            mnt = up;
            continue;
        }
        let name = read_field::<u64>(dentry, koff!(dentry_name)).unwrap_or(0);
        if name != 0 {
            // SAFETY: the helper checks the kernel address and writes at most the slot.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, slot) };
        }
        dentry = parent;
    }
    // SAFETY: the caller's record.
    unsafe {
        (*data).exe_depth = steps;
        (*data).exe_flags = flags;
    }
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`;
/// runs in the process after the new image is in place (its comm is the new name).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn bw_exec(ctx: RawTracePointContext) -> i32 {
    if !offsets_valid() {
        return 0;
    }
    let origin = Origin::current();
    let tgid = origin.tgid;
    let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    let tag = match watched(tgid) {
        Some(tag) => tag,
        None => {
            if mode() & MODE_NAMES == 0 {
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

    // SAFETY: returns a pointer value only; dereferenced through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let ppid = read_field::<u64>(task, koff!(task_real_parent))
        .and_then(|parent| read_field::<u32>(parent, koff!(task_tgid)))
        .unwrap_or(0);
    let bprm: u64 = ctx.arg(2);
    let filename_ptr = read_field::<u64>(bprm, koff!(binprm_filename)).unwrap_or(0);
    let Some(mut record) = reserve::<ExecData>(EventKind::Exec, origin) else {
        return 0;
    };
    let data = record.data();
    // SAFETY: the payload slot of a reserved record; the string reads write into their own
    // fixed-size arrays inside it.
    unsafe {
        (*data).ppid = ppid;
        (*data).watch_tag = tag;
        (*data).comm = comm;
        let dst = &mut (*data).filename;
        dst[0] = 0;
        let len = if filename_ptr != 0 {
            match bpf_probe_read_kernel_str_bytes(filename_ptr as *const u8, dst) {
                Ok(bytes) => bytes.len() as u32,
                Err(_) => 0,
            }
        } else {
            0
        };
        (*data).filename_len = len;
        exe_path(bprm, data);
    }
    // A watched app starting: where the hooks run may have to follow it at once.
    record.submit_urgent();
    0
}

/// `sched_process_exit(struct task_struct *p, ...)`; runs in the exiting thread. A watched
/// process ends when its last thread exits (`signal->live` has dropped to 0 by then), not
/// when its leader does: a leader may `pthread_exit`, and `execve` from another thread
/// makes the leader exit while the process goes on.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn bw_exit(_ctx: RawTracePointContext) -> i32 {
    if !offsets_valid() {
        return 0;
    }
    let origin = Origin::current();
    let tgid = origin.tgid;
    if watched(tgid).is_none() {
        return 0;
    }
    // SAFETY: pointer value only; dereferenced through probe reads.
    let task = unsafe { bpf_get_current_task() };
    let live = read_field::<u64>(task, koff!(task_signal))
        .and_then(|signal| read_field::<i32>(signal, koff!(signal_live)));
    match live {
        Some(0) => {}
        Some(_) => return 0,
        // Unreadable: fall back to the leader's exit.
        None if origin.tid == tgid => {}
        None => return 0,
    }
    let _ = WATCH_TGIDS.remove(tgid);
    let exit_code = read_field::<u32>(task, koff!(task_exit_code)).unwrap_or(0);
    // The record speaks for the whole process.
    let origin = Origin {
        tid: tgid,
        ..origin
    };
    emit(
        EventKind::Exit,
        origin,
        ExitData { exit_code, _pad: 0 },
        false,
    );
    0
}
