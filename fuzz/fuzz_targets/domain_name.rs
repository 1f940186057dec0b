#![no_main]
//! Names as DNS, SNI and Host give them (attacker-chosen): normalising (IDNA) and the
//! policy's look-up.
use std::sync::OnceLock;

use brokerwatch::policy::{matcher::normalize_domain, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    let policy = POLICY.get_or_init(Policy::builtin);
    let name = String::from_utf8_lossy(data);
    if let Ok(n) = normalize_domain(&name) {
        assert!(normalize_domain(&n).is_ok(), "normal form not normal: {n:?}");
    }
    let _ = policy.lookup(Some(&name), None);
});
