#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = brokerwatch::naming::dns::parse_answer(data, false);
    let _ = brokerwatch::naming::dns::parse_answer(data, true);
});
