//! How the process's allocator treats the CPU backend's tensors. Every op writes a fresh buffer
//! (a forward of SmolLM2-135M on 32 prompts makes thousands of 1–30 MiB buffers). By default glibc
//! gives buffers past its mmap threshold back to the OS when they are freed, and the next op's
//! buffer then faults in fresh zeroed pages: a fifth of a CPU forward went to page faults. Kept in
//! the heap up to 32 MiB (the most glibc allows for this threshold), and not trimmed until 1 GiB
//! lies free, freed buffers are reused as they are: measured side by side, a standalone edge
//! model's forward took 30% less time and the full model's 8–12% less (`carve bench forward`).

/// Raises glibc's mmap and trim thresholds (Linux with glibc; elsewhere nothing to do), unless
/// `CARVE_DEFAULT_MALLOC` is set (to measure the difference side by side).
pub fn keep_freed_buffers() {
    if std::env::var_os("CARVE_DEFAULT_MALLOC").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once, first thing in main.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
