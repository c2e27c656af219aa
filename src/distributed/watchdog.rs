//! A rank never waits forever on the others. Blocking MPI operations have no timeout of their
//! own, and a rank that hangs (or dies where the launcher does not notice) would leave the rest
//! blocked in their next all-reduce. Each operation of a multi-rank world is therefore timed
//! by a [`Waiting`] guard; a background thread checks the guard and, past the timeout, prints
//! which operation waited and ends the process. The launcher (mpirun, srun) then ends the other
//! ranks. The staged run keeps its last checkpoint; the run folder itself is never half-written.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The variable that sets the timeout, in seconds.
pub const TIMEOUT_VAR: &str = "KD_COLLECTIVE_TIMEOUT";
/// Without [`TIMEOUT_VAR`]: PyTorch's default for NCCL process groups. Long enough for a rank
/// that loads its model from a slow shared file system before the first all-reduce.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The exit code of a rank that gave up waiting (as timeout(1) exits).
pub const EXIT_TIMED_OUT: i32 = 124;

/// The operation this rank is waiting in, and since when.
static WAITING: Mutex<Option<(String, Instant)>> = Mutex::new(None);
/// What the run is doing ("training step 12"), for the message.
static PHASE: Mutex<String> = Mutex::new(String::new());

/// Records what the run is doing, so that a timeout can say where it hung.
pub fn set_phase(phase: impl Into<String>) {
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = phase.into();
}

fn phase() -> String {
    PHASE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Times one operation across ranks while it lives.
#[must_use]
pub struct Waiting(());

impl Waiting {
    /// Starts timing `what` ("an all-reduce of 12345 floats"), in the current phase.
    pub fn on(what: impl Into<String>) -> Self {
        let (what, phase) = (what.into(), phase());
        let what = if phase.is_empty() {
            what
        } else {
            format!("{what} in {phase}")
        };
        *lock() = Some((what, Instant::now()));
        Self(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        *lock() = None;
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<(String, Instant)>> {
    WAITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// What this rank is waiting in and for how long, if it is waiting on the others.
pub fn current() -> Option<(String, Duration)> {
    lock()
        .as_ref()
        .map(|(w, since)| (w.clone(), since.elapsed()))
}

/// The timeout [`TIMEOUT_VAR`] sets (seconds, > 0), or [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration, super::DistributedError> {
    match std::env::var(TIMEOUT_VAR) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                super::DistributedError::Init(format!(
                    "{TIMEOUT_VAR}={v}: give the seconds a rank may wait on the others (> 0)"
                ))
            }),
    }
}

/// Starts the thread that ends this process when one operation waits longer than `timeout`.
pub fn start(timeout: Duration, rank: usize, size: usize) {
    let tick = (timeout / 20).clamp(Duration::from_millis(20), Duration::from_millis(500));
    std::thread::Builder::new()
        .name("kd-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(tick);
            if let Some((what, waited)) = current().filter(|(_, w)| *w > timeout) {
                eprintln!(
                    "error: rank {rank} of {size}: {what} waited {:.0} s for the other ranks ({TIMEOUT_VAR}={}): one of them has died or hangs; stopping this rank (the run folder is unchanged; a staged checkpoint resumes with the same number of ranks)",
                    waited.as_secs_f64(),
                    timeout.as_secs_f64()
                );
                // No destructor may run: another thread is inside MPI, which is not reentrant.
                // SAFETY: _exit ends the process at once; nothing is touched after it.
                unsafe { libc::_exit(EXIT_TIMED_OUT) }
            }
        })
        .expect("the watchdog thread starts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_marks_the_wait_while_it_lives() {
        assert!(current().is_none());
        {
            set_phase("training step 3");
            let _w = Waiting::on("an all-reduce of 10 floats");
            let (what, _) = current().expect("waiting");
            assert_eq!(what, "an all-reduce of 10 floats in training step 3");
        }
        assert!(current().is_none());
    }
}
