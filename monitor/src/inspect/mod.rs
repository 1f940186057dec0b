//! What left (issue 25): the plaintext watched processes handed their TLS libraries, decoded
//! (HTTP/1.1, HTTP/2, WebSocket) and searched for identifiers: the user's own (e-mail, name,
//! phone; given with `identity add` or `audit --email`), the machine's (machine id, host
//! name, MAC addresses, the login name), and other people's e-mail addresses (counted,
//! never kept). Opt-in; the bytes are searched in memory and dropped, and what stays is
//! which identifier, in which form, where in the request, to which host.

pub mod http1;
pub mod http2;
pub mod identity;
pub mod machine;

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::{bounded::BoundedLru, kernel::wire::PlainRecord};
pub use identity::{Form, IdKind, Identifier, IdentitySet};
use monitor_common::TlsLib;

/// Bytes of a body held at most (more is counted as not read).
pub const MAX_BODY: usize = 256 * 1024;
/// Bytes a compressed body may inflate to at most.
pub const MAX_INFLATED: usize = 1024 * 1024;
/// TLS connections followed at once (least recently used forgotten).
const MAX_CONNS: usize = 4_096;
/// Distinct (process, host, identifier, form, place) rows held (more are counted).
const MAX_LEAKS: usize = 16_384;
/// Distinct other people's addresses counted per row, at most.
const MAX_OTHERS: usize = 10_000;

/// Where in a request an identifier was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// The request's path and query string.
    Url,
    Header,
    Cookie,
    Body,
    /// A WebSocket message.
    #[serde(rename = "websocket")]
    WebSocket,
}

impl Place {
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Url => "in the URL",
            Self::Header => "in a header",
            Self::Cookie => "in a cookie",
            Self::Body => "in the body",
            Self::WebSocket => "in a WebSocket message",
        }
    }
}

/// One request decoded from plaintext: its host and its parts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// `Host` (HTTP/1.1) or `:authority` (HTTP/2).
    pub host: Option<String>,
    pub named_by_authority: bool,
    pub parts: Vec<(Place, Vec<u8>)>,
    /// Part of it was not read (past the bounds, or past 16 KiB of one write).
    pub truncated: bool,
    /// Headers or body could not be decoded.
    pub unreadable: bool,
}

/// What was found in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Sent {
    /// One of the user's or the machine's identifiers.
    Identifier {
        kind: IdKind,
        form: Form,
        place: Place,
    },
    /// E-mail addresses that are none of the user's (counted, never kept).
    OtherEmails { place: Place },
}

/// Key of one row: a process sent something to a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeakKey {
    pub pid: u32,
    /// The host the request named (`None`: no Host or :authority).
    pub host: Option<String>,
    pub sent: Sent,
}

/// How often, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakAgg {
    pub uid: u32,
    pub tid: u32,
    pub lib: TlsLib,
    /// Requests that carried it.
    pub requests: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// HTTP/2 `:authority` (else the HTTP/1.1 `Host` header) named the host.
    pub by_authority: bool,
    /// Distinct other people's addresses (hashes with a per-run key; the addresses are not
    /// kept).
    others: HashSet<u64>,
}

impl LeakAgg {
    /// Distinct other people's addresses in this row.
    pub fn other_addresses(&self) -> usize {
        self.others.len()
    }
}

/// What the inspector read and could not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectStats {
    /// Writes seen (first chunks).
    pub writes: u64,
    pub bytes_read: u64,
    /// Bytes of writes past the 16 KiB read of each, and chunks lost on the way.
    pub bytes_not_read: u64,
    pub requests: u64,
    /// Requests whose headers or body could not be decoded (HTTP/2 joined late, bad gzip).
    pub unreadable: u64,
    /// Rows not kept (the table was full).
    pub rows_dropped: u64,
}

/// The state of one TLS connection's outgoing stream.
#[derive(Debug)]
enum Stream {
    /// Between HTTP/1 requests (or before the first).
    Head(Vec<u8>),
    Body(http1::Pending),
    WebSocket {
        host: Option<String>,
        buf: Vec<u8>,
    },
    Http2(Box<http2::Connection>),
    /// Not HTTP, or out of step: waits for a write that starts a request.
    Lost,
}

/// The plaintext inspector: identities per user, streams per connection, rows found.
pub struct Inspector {
    machine: Vec<Identifier>,
    own: HashMap<u32, Vec<Identifier>>,
    sets: HashMap<u32, IdentitySet>,
    streams: BoundedLru<(u32, u64), Stream>,
    leaks: HashMap<LeakKey, LeakAgg>,
    key: u64,
    pub stats: InspectStats,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("rows", &self.leaks.len())
            .finish()
    }
}

impl Inspector {
    /// An inspector matching `machine` identifiers (every user's processes) and each user's
    /// own (`own`, by uid).
    pub fn new(machine: Vec<Identifier>, own: HashMap<u32, Vec<Identifier>>) -> Self {
        Self {
            machine,
            own,
            sets: HashMap::new(),
            streams: BoundedLru::new(MAX_CONNS),
            leaks: HashMap::new(),
            key: rand_key(),
            stats: InspectStats::default(),
        }
    }

    /// Replaces `uid`'s own identifiers (`identity add` and `remove`).
    pub fn set_own(&mut self, uid: u32, ids: Vec<Identifier>) {
        self.own.insert(uid, ids);
        self.sets.remove(&uid);
    }

    fn set_for(&mut self, uid: u32) -> &IdentitySet {
        let (machine, own) = (&self.machine, &self.own);
        self.sets.entry(uid).or_insert_with(|| {
            let mut ids = machine.clone();
            ids.extend(own.get(&uid).into_iter().flatten().cloned());
            if let Some(login) = machine::login_identifier(uid) {
                ids.push(login);
            }
            IdentitySet::new(ids)
        })
    }

    /// Takes one chunk of a write.
    pub fn feed(&mut self, r: &PlainRecord) {
        let tgid = r.header.tgid;
        if r.offset == 0 {
            self.stats.writes += 1;
            // The part of the write no chunk carries is never read.
            let read = (monitor_common::PLAIN_CHUNK as u64) * monitor_common::PLAIN_CHUNKS as u64;
            self.stats.bytes_not_read += r.total.saturating_sub(read);
        }
        if !r.readable {
            self.stats.bytes_not_read += r.total.saturating_sub(r.offset as u64).min(4096);
            self.streams.put((tgid, r.conn), Stream::Lost);
            return;
        }
        self.stats.bytes_read += r.data.len() as u64;
        let state = self
            .streams
            .pop(&(tgid, r.conn))
            .unwrap_or(Stream::Head(Vec::new()));
        let (state, requests) = step(state, &r.data, r.offset == 0);
        // A write longer than what was read leaves the stream out of step.
        let last_chunk = r.offset as u64 + r.data.len() as u64 >= r.total.min(16 * 1024);
        let cut = last_chunk && r.total > 16 * 1024;
        let state = if cut { cut_off(state) } else { state };
        self.streams.put((tgid, r.conn), state);
        for mut req in requests {
            req.truncated |= cut;
            self.request(r, &req);
        }
    }

    fn request(&mut self, r: &PlainRecord, req: &Request) {
        self.stats.requests += 1;
        if req.unreadable {
            self.stats.unreadable += 1;
        }
        let uid = r.header.uid;
        let key = self.key;
        let set = self.set_for(uid);
        let mut found: Vec<(Sent, Vec<u64>)> = Vec::new();
        let own_emails: Vec<String> = set
            .identifiers()
            .iter()
            .filter(|i| i.kind == IdKind::Email)
            .map(|i| i.value.clone())
            .collect();
        for (place, bytes) in &req.parts {
            for m in set.find(bytes) {
                let sent = Sent::Identifier {
                    kind: m.kind,
                    form: m.form,
                    place: *place,
                };
                if !found.iter().any(|(s, _)| *s == sent) {
                    found.push((sent, Vec::new()));
                }
            }
            let others: Vec<u64> = machine::email_addresses(bytes)
                .into_iter()
                .filter(|a| !own_emails.contains(a))
                .map(|a| keyed_hash(key, &a))
                .collect();
            if !others.is_empty() {
                found.push((Sent::OtherEmails { place: *place }, others));
            }
        }
        for (sent, others) in found {
            let key = LeakKey {
                pid: r.header.tgid,
                host: req.host.clone(),
                sent,
            };
            if !self.leaks.contains_key(&key) && self.leaks.len() >= MAX_LEAKS {
                self.stats.rows_dropped += 1;
                continue;
            }
            let ts = r.header.ts_ns;
            let agg = self.leaks.entry(key).or_insert_with(|| LeakAgg {
                uid,
                tid: r.header.tid,
                lib: r.lib,
                requests: 0,
                first_ns: ts,
                last_ns: ts,
                by_authority: req.named_by_authority,
                others: HashSet::new(),
            });
            agg.requests += 1;
            agg.last_ns = agg.last_ns.max(ts);
            for h in others {
                if agg.others.len() < MAX_OTHERS {
                    agg.others.insert(h);
                }
            }
        }
    }

    /// Every row found so far, ordered by first sighting.
    pub fn leaks(&self) -> Vec<(&LeakKey, &LeakAgg)> {
        let mut out: Vec<_> = self.leaks.iter().collect();
        out.sort_by_key(|(k, a)| (a.first_ns, (*k).clone()));
        out
    }

    /// Forgets a process's rows (it ended and they were kept elsewhere).
    pub fn forget_rows_of(&mut self, pid: u32) {
        self.leaks.retain(|k, _| k.pid != pid);
    }

    /// Forgets a process's connections (it ended); its rows stay.
    pub fn forget_process(&mut self, pid: u32) {
        let gone: Vec<(u32, u64)> = self
            .streams
            .iter()
            .map(|(k, _)| *k)
            .filter(|(p, _)| *p == pid)
            .collect();
        for k in gone {
            self.streams.pop(&k);
        }
    }
}

/// The state after a write that was cut short: a body by length stays in step only if the
/// cut fell inside it; anything else is out of step.
fn cut_off(state: Stream) -> Stream {
    match state {
        Stream::Head(buf) if buf.is_empty() => Stream::Head(buf),
        _ => Stream::Lost,
    }
}

/// Feeds `bytes` (`start`: the beginning of a write) to a stream's state.
fn step(state: Stream, bytes: &[u8], start: bool) -> (Stream, Vec<Request>) {
    let mut out = Vec::new();
    let mut state = match state {
        Stream::Lost
            if start && (http1::starts_request(bytes) || bytes.starts_with(http2::PREFACE)) =>
        {
            Stream::Head(Vec::new())
        }
        Stream::Lost => return (Stream::Lost, out),
        s => s,
    };
    let mut input: Vec<u8> = bytes.to_vec();
    loop {
        state = match state {
            Stream::Head(mut buf) => {
                buf.extend_from_slice(&input);
                input.clear();
                if buf.len() >= 3
                    && http2::PREFACE.starts_with(&buf[..buf.len().min(http2::PREFACE.len())])
                {
                    if buf.len() < http2::PREFACE.len() {
                        break (Stream::Head(buf), out);
                    }
                    let mut c = Box::new(http2::Connection::new());
                    out.extend(c.feed(&buf));
                    break (Stream::Http2(c), out);
                }
                if !buf.is_empty() && !http1::starts_request(&buf) && buf.len() >= 16 {
                    break (Stream::Lost, out);
                }
                match http1::parse_head(&buf) {
                    None => break (Stream::Head(buf), out),
                    Some(Err(())) => break (Stream::Lost, out),
                    Some(Ok((pending, n))) => {
                        input = buf.split_off(n);
                        Stream::Body(pending)
                    }
                }
            }
            Stream::Body(mut p) => {
                let (used, done) = http1::take_body(&mut p, &input);
                input.drain(..used);
                if !done {
                    break (Stream::Body(p), out);
                }
                let ws = p.websocket.then(|| p.request.host.clone());
                out.push(http1::finish(p));
                match ws {
                    Some(host) => Stream::WebSocket {
                        host,
                        buf: Vec::new(),
                    },
                    None if input.is_empty() => break (Stream::Head(Vec::new()), out),
                    None => Stream::Head(Vec::new()),
                }
            }
            Stream::WebSocket { host, mut buf } => {
                buf.extend_from_slice(&input);
                input.clear();
                loop {
                    match http1::ws_frame(&buf) {
                        None => break,
                        Some(Err(_)) => return (Stream::Lost, out),
                        Some(Ok(http1::WsFrame {
                            data,
                            compressed,
                            opcode,
                            len,
                        })) => {
                            buf.drain(..len);
                            // Text, binary and continuation frames carry the message.
                            if matches!(opcode, 0..=2) {
                                let data = if compressed {
                                    http1::ws_inflate(&data)
                                } else {
                                    Some(data)
                                };
                                let mut req = Request {
                                    host: host.clone(),
                                    ..Request::default()
                                };
                                match data {
                                    Some(d) => req.parts.push((Place::WebSocket, d)),
                                    None => req.unreadable = true,
                                }
                                out.push(req);
                            }
                        }
                    }
                }
                break (Stream::WebSocket { host, buf }, out);
            }
            Stream::Http2(mut c) => {
                out.extend(c.feed(&input));
                break (Stream::Http2(c), out);
            }
            Stream::Lost => break (Stream::Lost, out),
        };
    }
}

fn rand_key() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// A keyed hash of an address: counts distinct addresses without keeping them.
fn keyed_hash(key: u64, s: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write_u64(key);
    h.write(s.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests;
