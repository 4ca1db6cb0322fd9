//! Linker flags for the eBPF object, and a rebuild when the bpf-linker binary changes (building
//! this crate depends on it, and cargo cannot express that dependency itself).
fn main() {
    // Let LLVM expand memset/memcpy into aligned word stores. bpf-linker's default
    // (--bpf-expand-memcpy-in-order) leaves memset to a libcall: a byte loop, which cost the
    // uplink ~25 ns per packet just to clear its `Packet` (measured with `cargo xtask bench`).
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(e) => println!(
            "cargo:warning=bpf-linker not found ({e}); run `cargo xtask test` to install it"
        ),
    }
}
