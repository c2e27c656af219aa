//! Stopping long work cleanly: the process-wide stop request (set by the Ctrl-C / SIGTERM
//! handler in `main.rs` for teach, distill, sweep and cache; read at step and chunk boundaries by
//! the training loop and the caching pass, which checkpoint there) and the stop and fault points the resume tests steer through the environment.
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks running work to stop at the next step boundary (SIGINT/SIGTERM handler).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// For the resume tests: `KD_STOP_AFTER_STEP=N` asks for a stop after step N, as SIGINT would.
pub fn stop_point(step: usize) {
    stop_point_after("KD_STOP_AFTER_STEP", step);
}

/// For the resume tests: asks for a stop (as SIGINT or SIGTERM would) when the environment
/// variable `var` holds `at`: `KD_STOP_AFTER_CHUNK=N` after the caching pass's N-th chunk.
pub fn stop_point_after(var: &str, at: usize) {
    if std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(at)
    {
        request_stop();
    }
}

/// A fault for the resume tests: `KD_FAULT_AFTER_STEP=N` kills the process (abort, as a SIGKILL
/// would: no destructor runs) right after step N and its checkpoint, if one was due.
pub fn fault_point(var: &str, at: usize) {
    if std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(at)
    {
        std::process::abort();
    }
}
