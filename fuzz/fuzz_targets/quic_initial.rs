#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = brokerwatch::naming::quic::parse_datagram(data, None);
    let mut s = brokerwatch::naming::quic::CryptoStream::default();
    for chunk in data.chunks(1200) {
        let _ = s.push_datagram(chunk);
    }
});
