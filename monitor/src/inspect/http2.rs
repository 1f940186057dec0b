//! HTTP/2 requests out of the plaintext a client writes on one connection: frames, HEADERS
//! and CONTINUATION decoded with HPACK (the connection's own dynamic table, Huffman), DATA
//! gathered per stream until its end. A decoder that starts after the connection did cannot
//! know the dynamic table: it says so ("headers unreadable") instead of guessing.

use std::collections::HashMap;

use super::{
    http1::{decode_body, Coding},
    Place, Request, MAX_BODY,
};

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frames longer than this are not held (the default SETTINGS_MAX_FRAME_SIZE is 16 KiB;
/// clients rarely raise it).
const MAX_FRAME: usize = 1 << 20;
/// Streams open at once per connection, at most.
const MAX_STREAMS: usize = 256;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

#[derive(Debug, Default)]
struct Stream {
    request: Request,
    coding: Option<Coding>,
    body: Vec<u8>,
}

/// One HTTP/2 client connection.
pub struct Connection {
    buf: Vec<u8>,
    preface_seen: bool,
    hpack: loona_hpack::Decoder<'static>,
    /// A header block being gathered (HEADERS then CONTINUATION): stream, flags, bytes.
    block: Option<(u32, u8, Vec<u8>)>,
    streams: HashMap<u32, Stream>,
    /// The dynamic table cannot be trusted any more (a block failed to decode).
    pub lost_table: bool,
    /// Frames skipped because they were too long to hold.
    pub skipped: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("streams", &self.streams.len())
            .field("lost_table", &self.lost_table)
            .finish()
    }
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            preface_seen: false,
            hpack: loona_hpack::Decoder::new(),
            block: None,
            streams: HashMap::new(),
            lost_table: false,
            skipped: 0,
        }
    }

    /// Takes the next bytes the client wrote; returns the requests completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Request> {
        self.buf.extend_from_slice(bytes);
        if !self.preface_seen {
            if self.buf.len() < PREFACE.len() {
                return Vec::new();
            }
            if self.buf.starts_with(PREFACE) {
                self.buf.drain(..PREFACE.len());
            }
            self.preface_seen = true;
        }
        let mut out = Vec::new();
        loop {
            if self.buf.len() < 9 {
                break;
            }
            let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
            if len > MAX_FRAME {
                // Out of step or a frame too long to hold: nothing more can be read here.
                self.skipped += 1;
                self.lost_table = true;
                self.buf.clear();
                break;
            }
            if self.buf.len() < 9 + len {
                break;
            }
            let kind = self.buf[3];
            let flags = self.buf[4];
            let stream = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                & 0x7fff_ffff;
            let payload: Vec<u8> = self.buf[9..9 + len].to_vec();
            self.buf.drain(..9 + len);
            self.frame(kind, flags, stream, &payload, &mut out);
        }
        out
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<Request>) {
        match kind {
            HEADERS => {
                let Some(mut frag) = unpad(flags, payload) else {
                    return;
                };
                if flags & PRIORITY != 0 {
                    frag = frag.get(5..).unwrap_or_default();
                }
                self.block = Some((stream, flags, frag.to_vec()));
            }
            CONTINUATION => match &mut self.block {
                Some((s, _, b)) if *s == stream => b.extend_from_slice(payload),
                _ => return,
            },
            DATA => {
                let Some(data) = unpad(flags, payload) else {
                    return;
                };
                if let Some(s) = self.streams.get_mut(&stream) {
                    let room = MAX_BODY.saturating_sub(s.body.len());
                    s.body.extend_from_slice(&data[..data.len().min(room)]);
                    if data.len() > room {
                        s.request.truncated = true;
                    }
                }
                if flags & END_STREAM != 0 {
                    self.end(stream, out);
                }
                return;
            }
            _ => return,
        }
        let Some((s, first_flags, _)) = &self.block else {
            return;
        };
        let (s, first_flags) = (*s, *first_flags);
        if flags & END_HEADERS == 0 {
            return;
        }
        let (_, _, block) = self.block.take().expect("checked");
        self.headers(s, &block);
        if first_flags & END_STREAM != 0 {
            self.end(s, out);
        }
    }

    fn headers(&mut self, stream: u32, block: &[u8]) {
        let mut request = Request::default();
        let mut coding = None;
        match self.hpack.decode(block) {
            Ok(list) => {
                for (name, value) in list {
                    let v = String::from_utf8_lossy(&value);
                    match name.as_slice() {
                        b":authority" => request.host = Some(v.trim().to_owned()),
                        b":path" => request.parts.push((Place::Url, value.clone())),
                        b"host" if request.host.is_none() => {
                            request.host = Some(v.trim().to_owned())
                        }
                        b"content-encoding" => coding = Some(Coding::of(&v)),
                        _ => {}
                    }
                    if !name.starts_with(b":") || name == b":path" {
                        let place = if name == b"cookie" {
                            Place::Cookie
                        } else {
                            Place::Header
                        };
                        if name != b":path" {
                            request.parts.push((place, value));
                        }
                    }
                }
            }
            Err(_) => {
                self.lost_table = true;
                request.unreadable = true;
            }
        }
        if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&stream) {
            self.skipped += 1;
            return;
        }
        let s = self.streams.entry(stream).or_default();
        // Trailers (a second HEADERS) add to the request.
        if s.request.host.is_none() {
            s.request.host = request.host;
        }
        s.request.unreadable |= request.unreadable;
        s.request.parts.extend(request.parts);
        if coding.is_some() {
            s.coding = coding;
        }
    }

    fn end(&mut self, stream: u32, out: &mut Vec<Request>) {
        let Some(mut s) = self.streams.remove(&stream) else {
            return;
        };
        if !s.body.is_empty() {
            match decode_body(s.coding.unwrap_or(Coding::Identity), &s.body) {
                Some(body) => s.request.parts.push((Place::Body, body)),
                None => s.request.unreadable = true,
            }
        }
        s.request.named_by_authority = true;
        out.push(s.request);
    }
}

/// A frame's payload without its padding (`None`: malformed).
fn unpad(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & PADDED == 0 {
        return Some(payload);
    }
    let pad = *payload.first()? as usize;
    payload.get(1..payload.len().checked_sub(pad)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn block(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        enc.encode(headers.iter().map(|(n, v)| (*n, *v)))
    }

    #[test]
    fn http2_headers_and_data_make_one_request_per_stream() {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let h = block(&[
            (b":method", b"POST"),
            (b":authority", b"sales.example.test"),
            (b":path", b"/match?x=1"),
            (b"x-user", b"someone"),
        ]);
        wire.extend(frame(HEADERS, END_HEADERS, 1, &h));
        wire.extend(frame(DATA, 0, 1, b"part one "));
        wire.extend(frame(DATA, END_STREAM, 1, b"part two"));
        let mut c = Connection::new();
        // Fed in pieces, as writes come.
        let (a, b) = wire.split_at(30);
        assert!(c.feed(a).is_empty());
        let reqs = c.feed(b);
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.host.as_deref(), Some("sales.example.test"));
        assert!(r.parts.contains(&(Place::Url, b"/match?x=1".to_vec())));
        assert!(r.parts.contains(&(Place::Header, b"someone".to_vec())));
        assert!(r
            .parts
            .contains(&(Place::Body, b"part one part two".to_vec())));
    }

    #[test]
    fn http2_dynamic_table_is_followed_and_a_late_start_is_said() {
        let mut enc = loona_hpack::Encoder::new();
        let hs: [(&[u8], &[u8]); 2] = [(b":authority", b"a.example.test"), (b"x-id", b"value-1")];
        let first = enc.encode(hs.iter().copied());
        let second = enc.encode(hs.iter().copied());
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &first));
        wire.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        let reqs = Connection::new().feed(&wire);
        assert_eq!(reqs.len(), 2);
        assert!(reqs
            .iter()
            .all(|r| r.parts.contains(&(Place::Header, b"value-1".to_vec()))));
        // Starting at the second block (its entries are indexed): unreadable, not guessed.
        let mut late = Connection::new();
        late.preface_seen = true;
        let reqs = late.feed(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        assert!(reqs[0].unreadable && late.lost_table);
    }

    #[test]
    fn http2_oversized_or_garbage_frames_stop_reading_without_holding_memory() {
        let mut c = Connection::new();
        c.preface_seen = true;
        assert!(c.feed(&[0xff; 64]).is_empty());
        assert_eq!(c.skipped, 1);
        assert!(c.buf.is_empty());
    }
}
