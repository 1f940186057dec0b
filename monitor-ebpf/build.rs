//! Rebuild the kernel programs when the BPF linker changes (a new toolchain may produce a
//! different object), as aya's template does.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
