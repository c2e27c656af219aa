//! Finding the world this process was started in: a launcher's variables say whether kd runs
//! as one of several ranks, and (with the `mpi` feature) MPI gives the rank and size.
use super::DistributedError;

/// Forces the choice: `KD_MPI=0` runs as one process whatever the environment says.
const FORCE_VAR: &str = "KD_MPI";

/// A launcher that started this process as one of several, as its variables say.
#[derive(Debug, PartialEq)]
struct Launch {
    launcher: &'static str,
    /// The ranks it started, when its variables say.
    ranks: Option<usize>,
}

/// Reads the launcher's variables (through `var`, the environment in [`init`]).
fn detect(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>, DistributedError> {
    if var(FORCE_VAR).as_deref() == Some("0") {
        return Ok(None);
    }
    let num = |k: &str| var(k).and_then(|v| v.trim().parse::<usize>().ok());
    let found = |launcher, ranks| Ok(Some(Launch { launcher, ranks }));
    if let Some(n) = num("OMPI_COMM_WORLD_SIZE") {
        return found("mpirun (Open MPI)", Some(n));
    }
    if let Some(n) = num("PMI_SIZE") {
        return found("the MPI launcher (PMI)", Some(n));
    }
    if var("PMIX_RANK").is_some() {
        return found("the PMIx launcher", num("SLURM_STEP_NUM_TASKS"));
    }
    // srun without an MPI plugin starts independent copies: refuse rather than train N
    // separate runs into one folder. (sbatch's own script has no step task count.)
    match num("SLURM_STEP_NUM_TASKS") {
        Some(n) if n > 1 => Err(DistributedError::NoPmi { ranks: n }),
        _ => Ok(None),
    }
}

/// What keeps MPI up: finalised when dropped (at the end of `main`).
pub struct Session {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

impl Session {
    fn single() -> Self {
        Self {
            #[cfg(feature = "mpi")]
            _universe: None,
        }
    }

    /// Finalises MPI (every rank must: mpirun counts a rank that exits without it as failed).
    pub fn finish(self) {
        #[cfg(feature = "mpi")]
        drop(self._universe);
    }
}

/// Sets up this process's world from its launcher: MPI when a launcher started it and kd has
/// the `mpi` feature, else one process. A launcher's several ranks without MPI are refused.
pub fn init() -> Result<Session, DistributedError> {
    let Some(launch) = detect(|k| std::env::var(k).ok())? else {
        return Ok(Session::single());
    };
    start(launch)
}

#[cfg(not(feature = "mpi"))]
fn start(launch: Launch) -> Result<Session, DistributedError> {
    match launch.ranks {
        Some(ranks) if ranks > 1 => Err(DistributedError::NoMpi {
            launcher: launch.launcher.into(),
            ranks,
        }),
        _ => Ok(Session::single()),
    }
}

#[cfg(feature = "mpi")]
fn start(launch: Launch) -> Result<Session, DistributedError> {
    let timeout = super::watchdog::timeout_from_env()?;
    let (universe, world) = super::mpi_world::MpiWorld::init()?;
    let (rank, size) = (world.rank_size().0, world.rank_size().1);
    if let Some(expected) = launch.ranks.filter(|&n| n != size) {
        return Err(DistributedError::Init(format!(
            "{} announced {expected} ranks, MPI's world has {size}",
            launch.launcher
        )));
    }
    if size > 1 {
        super::watchdog::start(timeout, rank, size);
    }
    super::install(Box::new(world))?;
    Ok(Session {
        _universe: Some(universe),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn detect_in(vars: &[(&str, &str)]) -> Result<Option<Launch>, DistributedError> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        detect(|k| env.get(k).cloned())
    }

    #[test]
    fn launchers_are_told_apart_by_their_variables() {
        assert_eq!(detect_in(&[]).unwrap(), None);
        let ompi = detect_in(&[("OMPI_COMM_WORLD_SIZE", "2")])
            .unwrap()
            .unwrap();
        assert_eq!(ompi.ranks, Some(2));
        let pmi = detect_in(&[("PMI_SIZE", "4"), ("PMI_RANK", "1")]).unwrap();
        assert_eq!(pmi.unwrap().ranks, Some(4));
        let pmix = detect_in(&[("PMIX_RANK", "0"), ("SLURM_STEP_NUM_TASKS", "8")]).unwrap();
        assert_eq!(pmix.unwrap().ranks, Some(8));
        // One srun task (a sweep shard) is one process; several without PMI are refused.
        assert_eq!(detect_in(&[("SLURM_STEP_NUM_TASKS", "1")]).unwrap(), None);
        let err = detect_in(&[("SLURM_STEP_NUM_TASKS", "4")]).unwrap_err();
        assert!(err.to_string().contains("srun --mpi=pmix"), "{err}");
        let forced = [("KD_MPI", "0"), ("OMPI_COMM_WORLD_SIZE", "2")];
        assert_eq!(detect_in(&forced).unwrap(), None);
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn several_ranks_without_mpi_are_refused() {
        let launch = detect_in(&[("OMPI_COMM_WORLD_SIZE", "2")])
            .unwrap()
            .unwrap();
        let err = start(launch).err().expect("refused").to_string();
        assert!(err.contains("--features mpi"), "{err}");
    }
}
