//! What the host says about processes and people: procfs snapshots ([`procinfo`]), app
//! identity from cgroup names and Flatpak ([`appid`]), cgroup v2 ([`cgroup`]), the user
//! and group database ([`users`]) clocks ([`clock`]), safe reading of configuration files ([`files`])
//! and the connections a process had open before brokerwatch started ([`sockets`]). No kernel
//! programs here.
//! [`give_back_memory`] hands freed heap back to the system.

pub mod appid;
pub mod cgroup;
pub mod clock;
pub mod files;
pub mod procinfo;
pub mod resolver;
pub mod sockets;
pub mod users;

/// Hands the heap's free memory back to the system (glibc keeps freed memory for reuse;
/// after a flood or a large parse that is megabytes a resting daemon does not need).
pub fn give_back_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: plain allocator call.
    unsafe {
        libc::malloc_trim(0);
    }
}
