//! What the host says about processes and people: procfs snapshots ([`procinfo`]), app
//! identity from cgroup names and Flatpak ([`appid`]), cgroup v2 ([`cgroup`]), the user
//! and group database ([`users`]) clocks ([`clock`]) and safe reading of configuration files ([`files`]). No kernel programs here.

pub mod appid;
pub mod cgroup;
pub mod clock;
pub mod files;
pub mod procinfo;
pub mod resolver;
pub mod users;
