#![no_main]
//! A row body read back from the store (a file that may be damaged).
use brokerwatch::daemon::store::{decode_alert, decode_finding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_alert(data);
    let _ = decode_finding(data);
});
