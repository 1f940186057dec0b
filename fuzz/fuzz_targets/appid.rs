#![no_main]
//! App identities: systemd unit-name unescaping, cgroup paths and `.flatpak-info`.
use brokerwatch::host::appid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = appid::unescape_unit(&text);
    if let Some(id) = appid::from_cgroup_path(&text) {
        let _ = id.display_id();
    }
    let _ = appid::parse_flatpak_info(&text);
});
