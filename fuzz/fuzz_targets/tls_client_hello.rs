#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whole, and split as a second TCP segment would deliver it.
    let _ = brokerwatch::naming::tls::client_hello(data);
    if data.len() > 2 {
        let _ = brokerwatch::naming::tls::client_hello(&data[..data.len() / 2]);
    }
});
