//! The library's error type: every failure that crosses kd's public API is a [`KdError`].
use std::path::PathBuf;

/// Errors returned by kd's library functions. Each variant names the file, row or field at fault
/// so that the command line can print one clear message.
#[derive(Debug, thiserror::Error)]
pub enum KdError {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its content is not what kd expects.
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },

    /// One row of a dataset cannot be used.
    #[error("{path}, row {row}: {message}")]
    BadRow {
        path: PathBuf,
        row: usize,
        message: String,
    },

    /// A configuration value is invalid or inconsistent: the user's flags or config file.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Training produced a non-finite loss, or one no healthy run reaches (`why` says which):
    /// the run diverged, and is never saved as finished.
    #[error("{what} became {value} at step {step} ({why}): the run diverged; lower --lr (or check the inputs), then rerun with --fresh")]
    Diverged {
        what: String,
        value: f64,
        step: usize,
        why: String,
    },

    /// A device or one of its kernels computed something wrong or could not run.
    #[error("device {device}: {message}: run `kd selftest --device {device}` and report it")]
    Device { device: String, message: String },

    /// One of kd's own invariants broke: a bug in kd, not in the input.
    #[error("internal error (a bug in kd; please report it with the command that ran): {0}")]
    Internal(String),

    /// A model, dataset or run folder could not be found.
    #[error("{0}")]
    NotFound(String),

    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The student has more trainable parameters than the budget allows.
    #[error(
        "the student has {count} trainable parameters{while_training}, over the budget of {budget}:\n{breakdown}"
    )]
    OverBudget {
        count: usize,
        budget: usize,
        breakdown: String,
        /// Empty, or what the count holds beyond the exported student.
        while_training: String,
    },

    /// A chart of `kd report` could not be drawn.
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },

    /// SIGINT or SIGTERM: the work stopped at a step boundary with a checkpoint.
    #[error("interrupted during {what}; the checkpoint is saved: run the same command again to resume (--fresh starts over)")]
    Interrupted { what: String },

    /// Another process is writing the same run folder.
    #[error("{path} is being written by another kd process ({holder}): wait for it to finish or choose another --out")]
    Busy { path: PathBuf, holder: String },

    /// A file kd kept to reuse (a staged checkpoint, a cached chunk, a shard's part) is
    /// truncated or damaged: it is never reused, and the message says how to make it again.
    #[error("{path}: {problem}: {remedy}")]
    Damaged {
        path: PathBuf,
        problem: String,
        remedy: String,
    },

    /// Two parts of one sharded caching pass were scored differently (another dtype, other
    /// kernels, another batch size or base model), so merged they would not be one pass's bits.
    #[error("{first} was scored with {first_by}, but {second} with {second_by}: score every part with the same --device, --dtype and --batch-size (rerun `kd cache --shard` for the odd ones), then merge")]
    PartsDiffer {
        first: PathBuf,
        first_by: String,
        second: PathBuf,
        second_by: String,
    },

    /// A staged checkpoint of a data-parallel run resumed by another number of ranks: its
    /// global batch, so its plan, would change mid-run.
    #[error("{path} was written by a run on {then} ranks and this one has {now}: resume with the same number (mpirun -np {then} …), or start over with --fresh")]
    RanksChanged {
        path: PathBuf,
        then: usize,
        now: usize,
    },

    /// Ranks of a data-parallel run could not be set up or could not agree.
    #[error(transparent)]
    Distributed(#[from] DistributedError),

    /// `--shard` names no one shard: a bad `i/N`, or scheduler variables that give none.
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),

    /// `kd sweep --merge` found points that no shard finished, or that were made from other
    /// settings or inputs than the sweep's.
    #[error("{out}: {problems}: run the shards that own them again (kd sweep --shard i/N takes the points p with p % N = i), then merge")]
    SweepIncomplete { out: PathBuf, problems: String },
    /// `kd serve` could not start or keep serving (the address is taken, the runtime failed).
    #[error("kd serve: {0}")]
    Serve(String),

    /// The teacher's logit cache was made from other training rows.
    #[error("{path} was made from training rows with fingerprint {cached}, but the data given has fingerprint {current}: re-run `kd teach` on this data")]
    FingerprintMismatch {
        path: PathBuf,
        cached: String,
        current: String,
    },
}

/// Shorthand for `Result<T, KdError>`.
pub type Result<T> = std::result::Result<T, KdError>;

impl KdError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KdError::Io {
            path: path.into(),
            source,
        }
    }

    /// A file whose content is wrong.
    pub fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        KdError::BadFile {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why the world of a data-parallel run (`crate::distributed`) could not be set up or an
/// operation across its ranks failed.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    /// A launcher started several copies of a kd that cannot talk to each other.
    #[error("{launcher} started {ranks} copies of kd, but this kd was built without MPI: build it with `cargo install --features mpi` (Open MPI or MPICH installed), or run one process")]
    NoMpi { launcher: String, ranks: usize },
    /// `srun` started several tasks without an MPI plugin: they would not form one world.
    #[error("srun started {ranks} tasks without an MPI plugin (no PMI variables): use `srun --mpi=pmix` (or pmi2), or one task")]
    NoPmi { ranks: usize },
    /// MPI_Init failed or MPI was initialised twice.
    #[error("MPI could not be initialised: {0}")]
    Init(String),
    /// A command that has no data-parallel form was started on several ranks.
    #[error("`kd {command}` does not run data-parallel; start it as one process (only teach and distill run under mpirun/srun; kd cache and kd sweep split with --shard)")]
    NotParallel { command: String },
    /// A collective was called from another thread than the one that initialised MPI.
    #[error("an MPI operation was called from another thread than main's (MPI runs funneled)")]
    WrongThread,
    /// NCCL failed (GPU all-reduce).
    #[error("NCCL: {0}")]
    Nccl(String),
    /// The ranks disagree where they must agree (a buffer's length, a plan).
    #[error("the ranks disagree: {0}")]
    Mismatch(String),
}
