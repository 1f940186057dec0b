#![no_main]
//! Kernel BTF (from /sys/kernel/btf/vmlinux, or a file given for another kernel).
use brokerwatch::kernel::btf::Btf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data) {
        let _ = btf.kernel_offsets();
        let _ = btf.field_offset("task_struct", "pid");
    }
});
