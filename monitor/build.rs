//! Builds `monitor-ebpf` for the BPF target with the nightly toolchain (aya-build), so that
//! `cargo build` of the userspace embeds the kernel object it was built with.
//! `cargo xtask setup` installs what this needs (rust-src, bpf-linker).
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../monitor-ebpf");
    let package = aya_build::Package {
        name: "monitor-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
