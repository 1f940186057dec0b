//! The floor: programs that do nothing, of each type the socket and packet hooks use. They
//! are never loaded by the sensor; the `modes` benchmark attaches them where the real
//! programs run, so that every figure can be read against what the kernel's hooks (and its
//! run-time statistics) cost by themselves.

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock_addr},
    programs::{SkBuffContext, SockAddrContext},
};

#[cgroup_sock_addr(connect4)]
pub fn bw_floor_conn4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_skb(egress)]
pub fn bw_floor_out(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(ingress)]
pub fn bw_floor_in(_ctx: SkBuffContext) -> i32 {
    1
}
