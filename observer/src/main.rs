//! `observer`: the agent (`observer run`) and its debug clients, one binary.

mod cli;

fn main() -> std::process::ExitCode {
    one_heap_arena();
    cli::main()
}

/// One malloc arena for the process, unless `MALLOC_ARENA_MAX` says otherwise. glibc gives
/// threads that meet on the heap arenas of their own, and memory freed into one is not reused
/// by the others: the Kubernetes lists are parsed on the runtime's threads and kept by the
/// controller, which left the agent at 93-100 MiB after a 150k-pod sync, against 75-77 MiB with
/// one arena (`cargo xtask bench --only inventory`). The agent's userspace does too little to
/// contend on one. Called before any other thread exists.
fn one_heap_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
