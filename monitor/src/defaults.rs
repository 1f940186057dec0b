//! Every default brokerwatch has, defined once: paths, group names, sizes.

/// Where the system service listens.
pub const SOCKET: &str = "/run/brokerwatch/brokerwatch.sock";
/// Where the service keeps its state (the connection history).
pub const STATE_DIR: &str = "/var/lib/brokerwatch";
/// The daemon's store (SQLite) in the state directory.
pub const STORE_FILE: &str = "brokerwatch.db";
/// The last policy that loaded, in the state directory (see `policy::last_good`).
pub const LAST_GOOD_POLICY: &str = "last-good-policy";
/// Directory of the administrator's policy files.
pub const POLICY_DIR: &str = "/etc/brokerwatch/policies.d";
/// The service's own system user.
pub const SERVICE_USER: &str = "brokerwatch";
/// The service's own group: no person is a member, so nothing the service writes is
/// readable through it.
pub const SERVICE_GROUP: &str = "brokerwatch";
/// Group whose members may connect to the socket and receive alerts about their own
/// processes (a different group from the service's own).
pub const SOCKET_GROUP: &str = "brokerwatch-users";
/// Group whose members see every user's alerts.
pub const ADMIN_GROUP: &str = "brokerwatch-admin";
/// App group watched when no app is named.
pub const APP_GROUP: &str = "meeting";
/// Kernel ring buffer size in bytes (a power of two).
pub const RING_BYTES: u32 = 4 * 1024 * 1024;
/// The same, as the command line spells it.
pub const RING_SIZE_ARG: &str = "4M";
/// Each user's sustained record budget in the kernel, bytes a second (about 8,700
/// connects or 250 DNS answers a second): a flood past it costs its own user's records.
pub const USER_RECORD_RATE: u64 = 1024 * 1024;
/// The same, as the command line spells it.
pub const USER_RECORD_RATE_ARG: &str = "1M";
/// Each user's burst, as a share of the ring (1/4): two users bursting at once still leave
/// half the ring to everyone else.
pub const USER_BURST_SHIFT: u32 = 2;
/// Over-budget users are told (to administrators) at most this often.
pub const BUDGET_NOTICE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Days of history kept.
pub const HISTORY_DAYS: u64 = 30;
/// Parent directory (under the cgroup v2 mount) of the cgroups audits create.
pub const AUDIT_CGROUP_PARENT: &str = "brokerwatch";
/// Present while systemd is the service manager.
pub const SYSTEMD_RUNTIME: &str = "/run/systemd/system";
/// The highest uid of a system account (Debian's `SYS_UID_MAX`): services such as the
/// system's DNS resolver run as one; people do not.
pub const SYSTEM_UID_MAX: u32 = 999;
/// Name the agent's notifications carry.
pub const APP_NAME: &str = "brokerwatch";

// The daemon's event loop.
/// How often the daemon does its periodic work (store, status, counters, watchdog) while
/// records come in.
pub const DAEMON_TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// How often it does it after a tick found nothing new (no records, no refusals): each
/// wake-up costs a VM a fraction of a millisecond before any work. The first records after
/// a quiet spell bring the next tick forward; systemd's watchdog and the metrics file
/// bring it closer when they are due sooner.
pub const DAEMON_IDLE_TICK: std::time::Duration = std::time::Duration::from_secs(10);
/// A change to the policy files wakes the daemon (inotify); it looks at them this long
/// after the first event of a burst (an editor's save is several events).
pub const POLICY_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);
/// How often the daemon looks at the policy files whatever the watch says (what inotify
/// cannot see: a directory missing at start, a network filesystem).
pub const POLICY_LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(120);
/// How long the daemon keeps connection rows in memory after they were last seen (the
/// history is in the store; rows only feed alerts).
pub const ROWS_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(600);
/// The daemon forgets a socket this long after its last connect or send: its names (first
/// payloads, DNS answers) arrive within moments, and a flood's sockets must not hold
/// memory for long.
pub const SOCKETS_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(30);
/// Requests that change the daemon's state (users' blocks) waiting for its thread; a full
/// queue tells the client to try again.
pub const COMMAND_QUEUE: usize = 64;
/// Events a subscriber may fall behind before it is told how many it missed (room for a
/// burst; the agent fetches what it missed from the history).
pub const SUBSCRIBER_BACKLOG: usize = 4096;
/// Store queries (history, report) running at once; more wait their turn.
pub const STORE_QUERIES: usize = 2;
/// How long accepting clients pauses after an accept error (out of descriptors), instead
/// of spinning.
pub const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// Lost kernel records are told at most this often.
pub const LOSS_NOTICE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// How often an audit redraws its live status line and reads the session's health.
pub const AUDIT_TICK: std::time::Duration = std::time::Duration::from_millis(500);
/// uids whose alerts the daemon counts for their own `status` (more are not counted).
pub const MAX_UIDS_TRACKED: usize = 65_536;
