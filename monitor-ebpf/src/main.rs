//! brokerwatch's kernel programs.
//!
//! * `cgroup/connect4|6` and `cgroup/sendmsg4|6` on the cgroup v2 root see every outbound
//!   `connect()` and every UDP send with an explicit destination, before the kernel acts on
//!   it; they allow it unless blocking is on and the block tables deny it.
//! * raw tracepoints on `sched_process_fork|exec|exit` keep the set of watched processes and
//!   tell userspace every watched process's parent, executable and end, however short-lived.
//! * raw tracepoints on `cgroup_mkdir|attach_task` report new cgroups (app scopes) and
//!   watched processes moving between cgroups.
//! * `cgroup_skb` ingress and egress copy DNS answers and the first payloads of watched
//!   sockets.
//! * blocking (opt-in): the socket programs deny a watched app's connects and sends to
//!   destinations the block tables name, and `bw_dns_block` (`cgroup_skb` ingress) reads DNS
//!   answers for blocked names before the asking socket can.
//!
//! * a uprobe and a uretprobe on glibc's `getaddrinfo()` (`gai`) report the names watched
//!   processes resolved and the addresses they got, where no DNS packet reaches them.
//! * uprobes on the TLS libraries' write calls (`plain`, opt-in, attached per watched
//!   process) copy the first 16 KiB of what the app hands them to send, before encryption.
//! * budgets (`budget`): every user's records are metered before the ring, so that one
//!   user's flood costs that user's records only; refusals are folded into counts per
//!   (process, destination).
//!
//! * `floor`: empty programs of the socket and packet hooks' types, for benchmarks only.
//!
//! Watching is decided here: an unwatched process costs a few map lookups and never reaches
//! the ring buffer. No per-event logging. Every record that cannot be reserved is counted.
#![no_std]
#![no_main]

mod block;
mod budget;
mod cgroup;
mod emit;
mod floor;
mod gai;
mod packet;
mod plain;
mod process;
mod skb;
mod sock;
mod state;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
