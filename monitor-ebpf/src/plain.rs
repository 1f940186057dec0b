//! Uprobes on the TLS libraries' write calls: what a watched process hands OpenSSL, GnuTLS
//! or NSPR to send, read before it is encrypted. Userspace attaches them per watched
//! process (a uprobe bound to one process is never hit by another), and they check
//! watching again; the first [`PLAIN_CHUNKS`] chunks of a write are copied, each charged
//! to the user's budget like any record.
//!
//! All three calls take (connection handle, buffer, length) as their first arguments:
//! `SSL_write(SSL *, const void *, int)`, `SSL_write_ex(SSL *, const void *, size_t,
//! size_t *)`, `gnutls_record_send(gnutls_session_t, const void *, size_t)`,
//! `PR_Write(PRFileDesc *, const void *, PRInt32)`, `PR_Send(PRFileDesc *, const void *,
//! PRInt32, PRIntn, PRIntervalTime)`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use monitor_common::{EventKind, PlainData, TlsLib, PLAIN_CHUNK, PLAIN_CHUNKS};

use crate::{
    emit::{reserve, Origin},
    state::watched,
};

/// Copies the first chunks of one write of a watched process.
#[inline(always)]
fn copy_write(ctx: &ProbeContext, lib: TlsLib, int_len: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if watched((pid_tgid >> 32) as u32).is_none() {
        return 0;
    }
    let conn: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let raw: u64 = ctx.arg(2).unwrap_or(0);
    // `int` lengths: only the low 32 bits are the argument, and negative is an error.
    let total = if int_len {
        let v = raw as u32 as i32;
        if v <= 0 {
            return 0;
        }
        v as u64
    } else {
        raw
    };
    if buf == 0 || total == 0 {
        return 0;
    }
    let origin = Origin::of(pid_tgid);
    for i in 0..PLAIN_CHUNKS {
        let offset = i as u64 * PLAIN_CHUNK as u64;
        if offset >= total {
            break;
        }
        let left = total - offset;
        let len = if left < PLAIN_CHUNK as u64 {
            left
        } else {
            PLAIN_CHUNK as u64
        };
        // Older verifiers (6.1) lose the bounds of `len` through the loop's arithmetic: the
        // value goes through a barrier and is checked again where the helper reads it.
        let len = core::hint::black_box(len);
        if len == 0 || len > PLAIN_CHUNK as u64 {
            break;
        }
        let len = len as u32;
        let Some(mut record) = reserve::<PlainData>(EventKind::Plaintext, origin) else {
            break;
        };
        let data = record.data();
        // SAFETY: the payload slot of a reserved record; the helper writes at most `len`
        // (<= PLAIN_CHUNK) bytes into its array and checks the user address.
        unsafe {
            (*data).conn = conn;
            (*data).total = total;
            (*data).offset = offset as u32;
            (*data).lib = lib as u32;
            (*data)._pad = 0;
            let dst = core::ptr::addr_of_mut!((*data).data) as *mut core::ffi::c_void;
            let src = (buf + offset) as *const core::ffi::c_void;
            let rc = bpf_probe_read_user(dst, len, src);
            (*data).len = if rc == 0 { len } else { 0 };
        }
        // What an app sent may alert: the reader is woken (at most once a millisecond per
        // CPU), else a write after the connection's last other record would wait in the ring
        // for an unrelated wakeup.
        record.submit_urgent();
    }
    0
}

/// `SSL_write` and `SSL_write_ex` (OpenSSL; `int` length for the first, but `size_t`
/// lengths below 2 GiB read the same in their low 32 bits).
#[uprobe]
pub fn bw_openssl_write(ctx: ProbeContext) -> u32 {
    copy_write(&ctx, TlsLib::OpenSsl, true)
}

/// `gnutls_record_send` (GnuTLS).
#[uprobe]
pub fn bw_gnutls_send(ctx: ProbeContext) -> u32 {
    copy_write(&ctx, TlsLib::GnuTls, false)
}

/// `PR_Write` and `PR_Send` (NSPR).
#[uprobe]
pub fn bw_nspr_write(ctx: ProbeContext) -> u32 {
    copy_write(&ctx, TlsLib::Nspr, true)
}
