//! Pinning the calling thread, for tests that read per-CPU map slots or depend on per-CPU
//! behaviour of the kernel (BPF_PROG_TEST_RUN runs on the caller's CPU).

/// Pins the calling thread to the CPU it is on and returns that CPU.
pub fn pin_current() -> usize {
    // SAFETY: plain libc calls on this thread with a properly sized cpu_set_t.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu failed");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity failed");
        cpu as usize
    }
}
