#![no_main]
//! Every list format: the first byte picks the format, the rest is the list.
use brokerwatch::policy::{import, ImportFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let names = ImportFormat::NAMES;
    let format = ImportFormat::parse(names[pick as usize % names.len()]).expect("listed");
    let _ = import::parse(format, &String::from_utf8_lossy(rest));
});
