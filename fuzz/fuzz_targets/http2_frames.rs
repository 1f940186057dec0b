#![no_main]
//! An HTTP/2 client connection's bytes (frames, HPACK header blocks with the dynamic
//! table, padding, CONTINUATION), fed in two pieces.
use brokerwatch::inspect::http2::{Connection, PREFACE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut c = Connection::new();
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(data);
    let (a, b) = bytes.split_at(bytes.len() / 2);
    let _ = c.feed(a);
    let _ = c.feed(b);
});
