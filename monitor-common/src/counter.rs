//! The kernel's per-CPU counters: one slot per thing counted, never silent.

/// Indexes of the per-CPU `COUNTERS` array; [`Counter::ALL`] lists every slot in order.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records the kernel tried to emit.
    Generated = 0,
    /// Records that found the ring buffer full (reservation failed).
    Lost = 1,
    /// Processes that should have been watched but `WATCH_TGIDS` was full.
    WatchTableFull = 2,
    /// UDP sends to an already reported (socket, destination), folded into one record.
    UdpRepeat = 3,
    /// Packets whose headers could not be read (ignored).
    BadPacket = 4,
    /// Records that woke the reader (the rest waited for its next pass).
    Wakeups = 5,
    /// Connects and sends denied by the block tables.
    Blocked = 6,
    /// Addresses of blocked names learned from DNS answers in the kernel.
    BlockLearned = 7,
    /// DNS answers the kernel could not read for blocking (malformed, or too long a walk).
    BlockDnsUnread = 8,
    /// Records refused because their user was over their budget (counted in
    /// [`Counter::Generated`] too; the flood's own, never another user's).
    OverBudget = 9,
    /// Watched sockets whose `SOCK_WATCH` slot went to a newer watched socket before they
    /// sent their first payload (65,536 cookies later): their payloads are not read. An
    /// upper bound: a socket that closed without sending counts too (a slot does not learn
    /// of a close).
    SockWatchReplaced = 10,
}

impl Counter {
    /// Every counter, in slot order (a compile-time check keeps the order honest).
    pub const ALL: [Self; 11] = [
        Self::Generated,
        Self::Lost,
        Self::WatchTableFull,
        Self::UdpRepeat,
        Self::BadPacket,
        Self::Wakeups,
        Self::Blocked,
        Self::BlockLearned,
        Self::BlockDnsUnread,
        Self::OverBudget,
        Self::SockWatchReplaced,
    ];
}

/// Slots of the `COUNTERS` array.
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32;

const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(
            Counter::ALL[i] as usize == i,
            "Counter::ALL out of slot order"
        );
        i += 1;
    }
};
