//! The kernel object's programs and maps by name, declared once. Userspace finds them by
//! these names; the kernel side defines them under the same identifiers (the `#[map]` and
//! program attributes take no constants), and a test holds the built object to exactly
//! this list, so the two cannot drift apart.

/// Programs (their function names in `monitor-ebpf`).
pub mod program {
    pub const CONNECT4: &str = "bw_connect4";
    pub const CONNECT6: &str = "bw_connect6";
    pub const SENDMSG4: &str = "bw_sendmsg4";
    pub const SENDMSG6: &str = "bw_sendmsg6";
    pub const INGRESS: &str = "bw_ingress";
    pub const EGRESS: &str = "bw_egress";
    pub const DNS_BLOCK: &str = "bw_dns_block";
    pub const FORK: &str = "bw_fork";
    pub const EXEC: &str = "bw_exec";
    pub const EXIT: &str = "bw_exit";
    pub const CGROUP_MKDIR: &str = "bw_cgroup_mkdir";
    pub const CGROUP_ATTACH: &str = "bw_cgroup_attach";
    /// `getaddrinfo()` entry and return in glibc (uprobe, uretprobe).
    pub const GAI_ENTRY: &str = "bw_gai_entry";
    pub const GAI_RETURN: &str = "bw_gai_return";
    /// What a watched process hands its TLS library to send (uprobes, attached per
    /// process): OpenSSL `SSL_write`/`SSL_write_ex`, GnuTLS `gnutls_record_send`, NSPR
    /// `PR_Write`/`PR_Send`.
    pub const OPENSSL_WRITE: &str = "bw_openssl_write";
    pub const GNUTLS_SEND: &str = "bw_gnutls_send";
    pub const NSPR_WRITE: &str = "bw_nspr_write";
    /// Empty programs of the hooks' types (`cgroup/connect4`, `cgroup_skb` egress and
    /// ingress): the floor the benchmarks measure against; never loaded by the sensor.
    pub const FLOOR_CONNECT4: &str = "bw_floor_conn4";
    pub const FLOOR_EGRESS: &str = "bw_floor_out";
    pub const FLOOR_INGRESS: &str = "bw_floor_in";
}

/// Maps (their static's names in `monitor-ebpf`).
pub mod map {
    /// The ring buffer of records.
    pub const EVENTS: &str = "EVENTS";
    /// [`crate::Counter`] slots, per CPU.
    pub const COUNTERS: &str = "COUNTERS";
    pub const LAST_WAKEUP: &str = "LAST_WAKEUP";
    /// Entry 0: until when (`CLOCK_BOOTTIME` ns) the reader passes again by itself.
    pub const READER_AWAKE: &str = "READER_AWAKE";
    /// [`crate::Config`].
    pub const CONFIG: &str = "CONFIG";
    pub const WATCH_TGIDS: &str = "WATCH_TGIDS";
    pub const WATCH_NAMES: &str = "WATCH_NAMES";
    pub const WATCH_CGROUPS: &str = "WATCH_CGROUPS";
    /// [`crate::WATCH_HINT_SLOTS`] bytes: which processes and cgroups may be watched.
    pub const WATCH_HINTS: &str = "WATCH_HINTS";
    pub const SOCK_WATCH: &str = "SOCK_WATCH";
    pub const SOCK_STATE: &str = "SOCK_STATE";
    pub const UDP_SEEN: &str = "UDP_SEEN";
    pub const BLOCK_DOMAINS: &str = "BLOCK_DOMAINS";
    pub const BLOCK_PAIRS: &str = "BLOCK_PAIRS";
    pub const BLOCK_CIDRS: &str = "BLOCK_CIDRS";
    pub const BLOCK_LEARNED: &str = "BLOCK_LEARNED";
    /// Slot 0: [`super::program::DNS_BLOCK`], tail-called by the ingress program.
    pub const DNS_BLOCK_PROG: &str = "DNS_BLOCK_PROG";
    pub const DNS_SCRATCH: &str = "DNS_SCRATCH";
    /// Per-user record budgets ([`crate::Budget`]).
    pub const BUDGETS: &str = "BUDGETS";
    /// Per-user record budgets by slot ([`crate::BudgetSlot`]), before `BUDGETS`.
    pub const BUDGET_SLOTS: &str = "BUDGET_SLOTS";
    /// Subordinate uid prefixes -> owning uid.
    pub const BUDGET_OWNERS: &str = "BUDGET_OWNERS";
    /// Calls over budget, per process and destination ([`crate::Folded`]).
    pub const FOLDED: &str = "FOLDED";
    /// Destinations whose calls are reported whatever the budget.
    pub const PRIORITY_ADDRS: &str = "PRIORITY_ADDRS";
    /// `getaddrinfo()` calls under way, per thread.
    pub const GAI_CALLS: &str = "GAI_CALLS";
}

/// Globals userspace sets before loading.
pub mod global {
    /// [`crate::KernelOffsets`] from the running kernel's BTF.
    pub const KOFFS: &str = "KOFFS";
    /// The ring buffer's size in bytes.
    pub const RING_BYTES: &str = "RING_BYTES";
}
