#![no_std]
// The library target only lets `observer` name this crate as a build dependency; the programs
// are in the `observer-ebpf` binary, built for bpfel-unknown-none by `observer/build.rs`.
