//! Rebuild when the bpf-linker binary changes: building this crate depends on it, and cargo cannot
//! express that dependency itself.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(e) => println!(
            "cargo:warning=bpf-linker not found ({e}); run `cargo xtask test` to install it"
        ),
    }
}
