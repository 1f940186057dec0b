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
