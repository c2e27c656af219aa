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

/// For the resume tests: `KD_STOP_AFTER_STEP=N` asks for a stop after step N, as SIGINT would;
/// says whether it did.
pub fn stop_point(step: usize) -> bool {
    stop_point_after("KD_STOP_AFTER_STEP", step)
}

/// For the resume tests: asks for a stop (as SIGINT or SIGTERM would) when the environment
/// variable `var` holds `at`: `KD_STOP_AFTER_CHUNK=N` after the caching pass's N-th chunk.
/// Says whether it did.
pub fn stop_point_after(var: &str, at: usize) -> bool {
    let hit = std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(at);
    if hit {
        request_stop();
    }
    hit
}

/// A fault for the resume tests: `KD_FAULT_AFTER_STEP=N` kills the process (abort, as a SIGKILL
/// would: no destructor runs) right after step N and its checkpoint, if one was due. For the
/// data-parallel tests, `KD_FAULT_RANK=r` limits it to rank r, and `KD_FAULT_HANG=1` makes the
/// rank hang instead of dying (the others' watchdog must notice).
pub fn fault_point(var: &str, at: usize) {
    let env_num = |v: &str| std::env::var(v).ok().and_then(|v| v.parse::<usize>().ok());
    if env_num(var) != Some(at) {
        return;
    }
    let rank = crate::distributed::world().rank();
    if env_num("KD_FAULT_RANK").is_some_and(|r| r != rank) {
        return;
    }
    if std::env::var("KD_FAULT_HANG").as_deref() == Ok("1") {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    std::process::abort();
}
