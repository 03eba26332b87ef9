//! Cooperative cancellation.

/// Whether the host asked the current run to stop (shutdown, an operator).
/// Return soon after it turns true; the run is stopped hard after a grace
/// period otherwise.
pub fn is_cancelled() -> bool {
    crate::host::is_cancelled()
}
