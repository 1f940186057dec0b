//! Names for QUIC sockets whose own name never left (issue 24, item 3): a browser's first
//! Initial to a closed port is all that leaves a socket, and when its shuffled ClientHello
//! put the server name in the second Initial, nothing in its bytes names it. A sibling
//! socket of the same process to the same address and port whose Initial carried the name
//! a moment earlier names it then, unless two different names were read there (on a shared
//! address it could be either).

use std::{net::IpAddr, sync::Arc};

use crate::bounded::BoundedLru;

/// How long a UDP socket's QUIC name stands for later unnamed sockets of the same process
/// to the same address and port.
pub const SIBLING_WINDOW_NS: u64 = 30_000_000_000;

/// A QUIC name read for a (process, address, port).
#[derive(Debug, Clone)]
struct QuicName {
    name: Arc<str>,
    at: u64,
    /// When two different names were last read there within [`SIBLING_WINDOW_NS`] (0:
    /// never).
    mixed_at: u64,
}

fn recent(ts: u64, t: u64) -> bool {
    ts.saturating_sub(t) <= SIBLING_WINDOW_NS
}

impl QuicName {
    /// The name for a sibling socket at `ts`, if it stands and is unambiguous.
    fn for_sibling(&self, ts: u64) -> Option<Arc<str>> {
        (recent(ts, self.at) && (self.mixed_at == 0 || !recent(ts, self.mixed_at)))
            .then(|| self.name.clone())
    }
}

/// The names read per (process, address, port), and the sockets named from them.
pub(super) struct Siblings {
    names: BoundedLru<(u32, IpAddr, u16), QuicName>,
    /// Sockets named from a sibling (until their own bytes name them), with their time.
    sockets: BoundedLru<u64, u64>,
}

impl Siblings {
    pub fn new(cap: usize) -> Self {
        Self {
            names: BoundedLru::new(cap),
            sockets: BoundedLru::new(cap),
        }
    }

    /// The name for socket `cookie` of `pid` to `dst:port`, opened at `ts` with no name of
    /// its own, if a sibling's stands; the socket is then remembered as named so.
    pub fn name_for(
        &mut self,
        cookie: u64,
        pid: u32,
        dst: IpAddr,
        port: u16,
        ts: u64,
    ) -> Option<Arc<str>> {
        let name = self.names.get(&(pid, dst, port))?.for_sibling(ts)?;
        self.sockets.put(cookie, ts);
        Some(name)
    }

    /// A socket of `pid` to `dst:port` carried `name` in its own QUIC Initial at `ts`.
    pub fn read(&mut self, pid: u32, dst: IpAddr, port: u16, name: &str, ts: u64) {
        let at = (pid, dst, port);
        let mixed_at = match self.names.get(&at) {
            Some(q) if *q.name != *name && recent(ts, q.at) => ts,
            Some(q) => q.mixed_at,
            None => 0,
        };
        let name = Arc::from(name);
        self.names.put(
            at,
            QuicName {
                name,
                at: ts,
                mixed_at,
            },
        );
    }

    /// Socket `cookie` is named by its own bytes now: whether a sibling had named it.
    pub fn names_itself(&mut self, cookie: u64) -> bool {
        self.sockets.pop(&cookie).is_some()
    }

    /// Forgets what is older than `before_ns`; whether a table gave memory back.
    pub fn forget(&mut self, before_ns: u64) -> bool {
        let a = self.names.forget_while(|q| q.at < before_ns);
        let b = self.sockets.forget_while(|ts| *ts < before_ns);
        a || b
    }
}
