//! HTTP/1.1 requests and WebSocket client frames out of the plaintext one TLS connection
//! writes: request line, headers (cookies apart), bodies by length or chunked, gzip and
//! deflate, and after an `Upgrade: websocket` request, unmasked frames (permessage-deflate
//! inflated). Every buffer is bounded; what does not fit is counted, and the stream picks
//! up again at the next write that starts a request.

use std::io::Read as _;

use super::{Place, Request, MAX_BODY, MAX_INFLATED};

/// Bytes of a request head at most.
const MAX_HEAD: usize = 64 * 1024;

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
}

/// A body's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Identity,
    Gzip,
    Deflate,
    /// `br`, `zstd` and others: not decoded (their bytes are searched as they are).
    Other,
}

impl Coding {
    pub(super) fn of(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Self::Identity,
            "gzip" | "x-gzip" => Self::Gzip,
            "deflate" => Self::Deflate,
            _ => Self::Other,
        }
    }
}

/// Inflates `body` (at most [`MAX_INFLATED`] bytes out); `None` when it is not what the
/// header says.
pub(super) fn decode_body(coding: Coding, body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let limit = MAX_INFLATED as u64;
    let ok = match coding {
        Coding::Identity | Coding::Other => return Some(body.to_vec()),
        Coding::Gzip => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        Coding::Deflate => {
            // `deflate` is zlib-wrapped by the standard, raw by some servers and clients.
            let z = flate2::read::ZlibDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out);
            if z.is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(body)
                    .take(limit)
                    .read_to_end(&mut out)
            } else {
                z
            }
        }
    };
    // A truncated stream still gives what it decoded so far.
    (ok.is_ok() || !out.is_empty()).then_some(out)
}

/// Whether `buf` may start an HTTP/1 request (a method token and a space).
pub(super) fn starts_request(buf: &[u8]) -> bool {
    let n = buf
        .iter()
        .take(16)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    n >= 3 && buf.get(n) == Some(&b' ')
}

/// A request whose head was read, waiting for its body.
#[derive(Debug)]
pub(super) struct Pending {
    pub request: Request,
    pub framing: Option<Framing>,
    pub coding: Coding,
    pub body: Vec<u8>,
    pub websocket: bool,
}

/// Parses a request head at the start of `buf`: `None` when more bytes are needed,
/// `Some(Err)` when it is not a request; else the request and the head's length.
pub(super) fn parse_head(buf: &[u8]) -> Option<Result<(Pending, usize), ()>> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return None,
        _ => return Some(Err(())),
    };
    let mut request = Request::default();
    if let Some(path) = req.path {
        request.parts.push((Place::Url, path.as_bytes().to_vec()));
    }
    let mut framing = None;
    let mut coding = Coding::Identity;
    let mut websocket = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(h.value);
        match name.as_str() {
            "host" => request.host = Some(value.trim().to_owned()),
            "content-length" if framing.is_none() => {
                framing = value.trim().parse().ok().map(Framing::Length);
            }
            "transfer-encoding" if value.to_ascii_lowercase().contains("chunked") => {
                framing = Some(Framing::Chunked)
            }
            "content-encoding" => coding = Coding::of(&value),
            "upgrade" if value.eq_ignore_ascii_case("websocket") => websocket = true,
            _ => {}
        }
        let place = if name == "cookie" {
            Place::Cookie
        } else {
            Place::Header
        };
        request.parts.push((place, h.value.to_vec()));
    }
    let pending = Pending {
        request,
        framing,
        coding,
        body: Vec::new(),
        websocket,
    };
    Some(Ok((pending, len)))
}

/// De-chunks `raw`: the body and whether the last chunk was seen (`None`: malformed).
pub(super) fn dechunk(raw: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            return Some((out, false));
        };
        let line = std::str::from_utf8(&raw[at..at + eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at += eol + 2;
        if size == 0 {
            return Some((out, true));
        }
        let end = at.checked_add(size)?;
        if end > raw.len() {
            out.extend_from_slice(&raw[at..]);
            return Some((out, false));
        }
        out.extend_from_slice(&raw[at..end]);
        at = end + 2;
        if at > raw.len() {
            return Some((out, false));
        }
    }
}

/// Takes body bytes from `buf` into `p`; the bytes used and whether the body is complete.
pub(super) fn take_body(p: &mut Pending, buf: &[u8]) -> (usize, bool) {
    match p.framing {
        None => (0, true),
        Some(Framing::Length(left)) => {
            let n = left.min(buf.len() as u64) as usize;
            let room = MAX_BODY.saturating_sub(p.body.len());
            p.body.extend_from_slice(&buf[..n.min(room)]);
            let left = left - n as u64;
            p.framing = Some(Framing::Length(left));
            (n, left == 0)
        }
        Some(Framing::Chunked) => {
            let room = MAX_BODY.saturating_sub(p.body.len());
            let n = buf.len().min(room);
            p.body.extend_from_slice(&buf[..n]);
            // Done at the last chunk, on a malformed one, or when the bound is reached
            // (the rest of this write is dropped with it).
            let done = !matches!(dechunk(&p.body), Some((_, false))) || n < buf.len();
            (if done { buf.len() } else { n }, done)
        }
    }
}

/// Finishes a request: its body decoded and added as a part.
pub(super) fn finish(mut p: Pending) -> Request {
    let raw = match p.framing {
        Some(Framing::Chunked) => dechunk(&p.body).map(|(b, _)| b).unwrap_or_default(),
        _ => std::mem::take(&mut p.body),
    };
    if !raw.is_empty() {
        match decode_body(p.coding, &raw) {
            Some(body) => p.request.parts.push((Place::Body, body)),
            None => p.request.unreadable = true,
        }
    }
    p.request
}

/// One WebSocket frame from a client.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct WsFrame {
    /// The payload, unmasked.
    pub data: Vec<u8>,
    /// RSV1: compressed (permessage-deflate).
    pub compressed: bool,
    pub opcode: u8,
    /// Bytes of the frame.
    pub len: usize,
}

/// One WebSocket frame at the start of `buf`; `None` when more bytes are needed,
/// `Some(Err(len))` for a frame too long to hold.
pub(super) fn ws_frame(buf: &[u8]) -> Option<Result<WsFrame, usize>> {
    if buf.len() < 2 {
        return None;
    }
    let rsv1 = buf[0] & 0x40 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at): (u64, usize) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as u64,
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (n as u64, 2),
    };
    if len > MAX_BODY as u64 {
        return Some(Err(at.saturating_add(len as usize)));
    }
    let key = if masked {
        let k: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let end = at + len as usize;
    let payload = buf.get(at..end)?;
    let data = match key {
        Some(k) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ k[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Some(Ok(WsFrame {
        data,
        compressed: rsv1,
        opcode,
        len: end,
    }))
}

/// Inflates a permessage-deflate message (raw deflate, the `00 00 ff ff` tail restored).
pub(super) fn ws_inflate(data: &[u8]) -> Option<Vec<u8>> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::new();
    let r = flate2::read::DeflateDecoder::new(input.as_slice())
        .take(MAX_INFLATED as u64)
        .read_to_end(&mut out);
    (r.is_ok() || !out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_head_gives_url_headers_cookie_and_framing() {
        let head = b"POST /v1/match?e=x HTTP/1.1\r\nHost: sales.example.test\r\nCookie: id=1\r\nContent-Length: 4\r\nContent-Encoding: gzip\r\n\r\nbody";
        let (p, n) = parse_head(head).unwrap().unwrap();
        assert_eq!(&head[n..], b"body");
        assert_eq!(p.request.host.as_deref(), Some("sales.example.test"));
        assert_eq!(p.framing, Some(Framing::Length(4)));
        assert_eq!(p.coding, Coding::Gzip);
        assert!(p
            .request
            .parts
            .contains(&(Place::Url, b"/v1/match?e=x".to_vec())));
        assert!(p.request.parts.contains(&(Place::Cookie, b"id=1".to_vec())));
        assert!(
            parse_head(b"POST / HTTP/1.1\r\nHost: a").is_none(),
            "needs more"
        );
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Some(Err(()))
        ));
    }

    #[test]
    fn http1_chunked_bodies_are_joined_and_their_end_found() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n"),
            Some((b"Wikipedia".to_vec(), true))
        );
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5\r\nped"),
            Some((b"Wikiped".to_vec(), false))
        );
        assert_eq!(dechunk(b"zz\r\n"), None);
    }

    #[test]
    fn http1_gzip_bodies_are_inflated_within_bounds() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![b'a'; MAX_INFLATED * 2]).unwrap();
        let packed = gz.finish().unwrap();
        let out = decode_body(Coding::Gzip, &packed).unwrap();
        assert_eq!(out.len(), MAX_INFLATED, "a gzip bomb stops at the bound");
        assert!(decode_body(Coding::Gzip, b"not gzip").is_none());
    }

    #[test]
    fn websocket_client_frames_are_unmasked() {
        let key = [1u8, 2, 3, 4];
        let text = b"hello";
        let mut frame = vec![0x81, 0x80 | text.len() as u8];
        frame.extend_from_slice(&key);
        frame.extend(text.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        let f = ws_frame(&frame).unwrap().unwrap();
        assert_eq!(
            (f.data.as_slice(), f.compressed, f.opcode, f.len),
            (&text[..], false, 1, frame.len())
        );
        assert!(ws_frame(&frame[..5]).is_none(), "needs more");
        let huge = [0x82, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(ws_frame(&huge), Some(Err(_))));
    }
}
