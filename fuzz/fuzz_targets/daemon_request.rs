#![no_main]
//! What a local user may write to the daemon's socket, and what a client reads back.
use brokerwatch::protocol::{Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Request>(data);
    let _ = serde_json::from_slice::<Reply>(data);
});
