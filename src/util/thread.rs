//! Thread priority: input how much lower than the calling thread's, output nothing (a platform
//! without per-thread nice values keeps the default).

/// Lowers the calling thread's priority by `by` nice levels (on Linux the nice value is per
/// thread, so only this thread changes).
pub fn lower_priority(by: i32) {
    #[cfg(unix)]
    let _ = rustix::process::nice(by);
    #[cfg(not(unix))]
    let _ = by;
}
