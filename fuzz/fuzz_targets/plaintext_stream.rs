#![no_main]
//! What a watched app writes, as the kernel hands it over: any bytes, cut into writes at
//! places the input chooses, through the HTTP/1.1 (chunked, gzip), WebSocket and HTTP/2
//! (HPACK) decoders and the identifier search.
use brokerwatch::{
    inspect::{Identifier, Inspector},
    kernel::wire::PlainRecord,
};
use libfuzzer_sys::fuzz_target;
use monitor_common::{EventHeader, EventKind, TlsLib};

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let mut own = std::collections::HashMap::new();
    own.insert(
        1000,
        vec![
            Identifier::email("fuzz@example.test").unwrap(),
            Identifier::name("Fuzz Tester").unwrap(),
        ],
    );
    let mut i = Inspector::new(Vec::new(), own);
    let header = EventHeader {
        kind: EventKind::Plaintext as u32,
        tgid: 7,
        tid: 7,
        uid: 1000,
        ts_ns: 1,
        cgroup_id: 0,
    };
    let step = (cuts as usize % 61) + 1;
    for (n, write) in rest.chunks(step).enumerate() {
        i.feed(&PlainRecord {
            header,
            lib: TlsLib::OpenSsl,
            conn: (n % 2) as u64,
            total: write.len() as u64,
            offset: 0,
            readable: cuts & 0x80 == 0 || n % 7 != 0,
            data: write.to_vec(),
        });
    }
    let _ = i.leaks();
});
