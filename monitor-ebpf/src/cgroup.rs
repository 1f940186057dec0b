//! Raw tracepoints on cgroup v2 changes: new cgroups (desktops, Flatpak and Snap start
//! every app in a scope of its own, so a new scope names the app before it runs) and
//! processes moving between cgroups (a watched process that moves keeps being watched,
//! and a process that joins a watched app's cgroup becomes watched).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use monitor_common::{CgroupData, EventKind, MODE_ALL, MODE_CGROUPS, WATCH_TAG_ALL};

use crate::{
    emit::{reserve, Origin},
    state::{koff, mode, offsets_valid, read_field, watch, WATCH_CGROUPS, WATCH_TGIDS},
};

/// The id of a `struct cgroup` on the cgroup v2 hierarchy, `None` for v1 hierarchies.
#[inline(always)]
fn v2_cgroup_id(cgrp: u64) -> Option<u64> {
    let root = read_field::<u64>(cgrp, koff!(cgroup_root))?;
    let hierarchy = read_field::<i32>(root, koff!(root_hierarchy_id))?;
    if hierarchy != 0 {
        return None;
    }
    let kn = read_field::<u64>(cgrp, koff!(cgroup_kn))?;
    read_field::<u64>(kn, koff!(kernfs_id))
}

/// Emits one cgroup record with the tracepoint's path string.
#[inline(always)]
fn emit_cgroup(kind: EventKind, cgroup_id: u64, tgid: u32, watch_tag: u32, path: u64) {
    let Some(mut record) = reserve::<CgroupData>(kind, Origin::current()) else {
        return;
    };
    let data = record.data();
    // SAFETY: the payload slot of a reserved record; the string read writes into its own
    // array inside it.
    unsafe {
        (*data).cgroup_id = cgroup_id;
        (*data).tgid = tgid;
        (*data).watch_tag = watch_tag;
        (*data)._pad = 0;
        let dst = &mut (*data).path;
        dst[0] = 0;
        let len = if path != 0 {
            match bpf_probe_read_kernel_str_bytes(path as *const u8, dst) {
                Ok(bytes) => bytes.len() as u32,
                Err(_) => 0,
            }
        } else {
            0
        };
        (*data).path_len = len;
    }
    // A new app scope, or a watched process moving: the watcher acts on it at once.
    record.submit_urgent();
}

/// `cgroup_mkdir(struct cgroup *cgrp, const char *path)`.
#[raw_tracepoint(tracepoint = "cgroup_mkdir")]
pub fn bw_cgroup_mkdir(ctx: RawTracePointContext) -> i32 {
    if !offsets_valid() {
        return 0;
    }
    let cgrp: u64 = ctx.arg(0);
    let path: u64 = ctx.arg(1);
    if let Some(id) = v2_cgroup_id(cgrp) {
        emit_cgroup(EventKind::CgroupMkdir, id, 0, 0, path);
    }
    0
}

/// `cgroup_attach_task(struct cgroup *dst_cgrp, const char *path, struct task_struct *task,
/// bool threadgroup)`; runs in the task that moves `task` (itself, or systemd).
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn bw_cgroup_attach(ctx: RawTracePointContext) -> i32 {
    if !offsets_valid() {
        return 0;
    }
    let cgrp: u64 = ctx.arg(0);
    let path: u64 = ctx.arg(1);
    let task: u64 = ctx.arg(2);
    let Some(id) = v2_cgroup_id(cgrp) else {
        return 0;
    };
    let Some(tgid) = read_field::<u32>(task, koff!(task_tgid)) else {
        return 0;
    };
    let mode = mode();
    // SAFETY: plain u32 values; a concurrent update can only give another valid tag.
    let tag = if mode & MODE_ALL != 0 {
        Some(WATCH_TAG_ALL)
    } else if let Some(tag) = unsafe { WATCH_TGIDS.get(tgid) } {
        Some(*tag)
    } else if mode & MODE_CGROUPS != 0 {
        // SAFETY: as above.
        match unsafe { WATCH_CGROUPS.get(id) } {
            Some(tag) => {
                let tag = *tag;
                watch(tgid, tag);
                Some(tag)
            }
            None => None,
        }
    } else {
        None
    };
    if let Some(tag) = tag {
        emit_cgroup(EventKind::CgroupAttach, id, tgid, tag, path);
    }
    0
}
