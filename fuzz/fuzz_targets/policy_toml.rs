#![no_main]
//! A policy file: stage one (parse with positions), then merged with the built-in policy
//! and resolved. Imports are dropped: they would read whatever paths the input names.
use brokerwatch::policy::{file, Policy, BUILTIN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(mut f) = file::parse("fuzz.toml", &text) else {
        return;
    };
    f.raw.import.clear();
    let mut files: Vec<_> = BUILTIN
        .iter()
        .map(|(n, t)| file::parse(n, t).expect("built-in"))
        .collect();
    files.push(f);
    if let Ok(p) = Policy::resolve(files, &[]) {
        let _ = p.lookup(Some("a.example"), None);
    }
});
