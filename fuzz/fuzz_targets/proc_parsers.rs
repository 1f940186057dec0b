#![no_main]
//! The /proc and /etc texts brokerwatch parses: stat, cgroup, mountinfo, resolv.conf,
//! /proc/net/udp.
use brokerwatch::host::{cgroup, procinfo, resolver};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = procinfo::parse_stat(&text);
    let _ = procinfo::parse_proc_cgroup(&text);
    let _ = cgroup::parse_cgroup2_mount(&text);
    let _ = resolver::loopback_nameservers(&text);
    let _ = resolver::dns_socket_inodes(&text, "127.0.0.53".parse().unwrap());
});
