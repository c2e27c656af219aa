//! Which share of a job one process takes: `--shard i/N` (`kd cache`, `kd sweep`), typed by hand
//! or, with `--shard auto`, read from the scheduler that started the process.
//!
//! `--shard auto` looks, in this order, for
//! - a SLURM job array: `SLURM_ARRAY_TASK_ID` and `SLURM_ARRAY_TASK_COUNT`; the index is
//!   `SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN` (arrays may start at 1: `--array=1-8`), and the
//!   array must be one contiguous range (no `:step`, no list), or task i would not be shard i;
//! - a Kubernetes Indexed Job: `JOB_COMPLETION_INDEX`, with the count from `KD_SHARD_COUNT`,
//!   which the manifest sets to the Job's `completions` (Kubernetes gives a pod its index only).
//!
//! Values that do not make one shard (not a number, an index at or past the count) are refused
//! before any work starts, and so is `auto` with none of these set.
use std::fmt;
use std::str::FromStr;

/// The SLURM array task's id, the number of tasks, and the array's first id, last id and step.
pub const SLURM_ID: &str = "SLURM_ARRAY_TASK_ID";
pub const SLURM_COUNT: &str = "SLURM_ARRAY_TASK_COUNT";
pub const SLURM_MIN: &str = "SLURM_ARRAY_TASK_MIN";
pub const SLURM_MAX: &str = "SLURM_ARRAY_TASK_MAX";
pub const SLURM_STEP: &str = "SLURM_ARRAY_TASK_STEP";
/// The pod's index in a Kubernetes Indexed Job, and the shard count its manifest sets.
pub const K8S_INDEX: &str = "JOB_COMPLETION_INDEX";
pub const K8S_COUNT: &str = "KD_SHARD_COUNT";

/// Which part of a job one process does: shard `index` of `count` takes items `index`,
/// `index + count`, … (all of them for 0 of 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole job.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`, refused unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, ShardError> {
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// Whether item `k` belongs to this shard.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// Parses `i/N` with 0 ≤ i < N.
    fn from_str(s: &str) -> Result<Self, ShardError> {
        let (i, n) = s.split_once('/').ok_or_else(|| ShardError::Malformed {
            given: s.to_string(),
        })?;
        let whole = |v: &str| {
            v.trim().parse::<usize>().map_err(|_| ShardError::NotWhole {
                value: v.to_string(),
            })
        };
        Shard::new(whole(i)?, whole(n)?)
    }
}

/// `--shard` as given: a shard, or `auto` (read from the scheduler's variables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSpec {
    Given(Shard),
    Auto,
}

impl FromStr for ShardSpec {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        match s.trim() {
            "auto" => Ok(ShardSpec::Auto),
            _ => s.parse().map(ShardSpec::Given),
        }
    }
}

impl ShardSpec {
    /// The shard to run; `auto` reads the scheduler's variables through `env` (the process
    /// environment in `kd`, a map in tests) and logs which it used.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Shard, ShardError> {
        match self {
            ShardSpec::Given(shard) => Ok(shard),
            ShardSpec::Auto => {
                let (shard, from) = from_scheduler(env)?;
                tracing::info!("--shard auto: shard {shard} from {from}");
                Ok(shard)
            }
        }
    }
}

/// The shard a scheduler gave this process (see the module's rules), and the variables it came
/// from, in words.
pub fn from_scheduler(env: impl Fn(&str) -> Option<String>) -> Result<(Shard, String), ShardError> {
    if let Some(id) = env(SLURM_ID) {
        return from_slurm(&id, &env);
    }
    if let Some(index) = env(K8S_INDEX) {
        let index = number(K8S_INDEX, &index)?;
        let count = required(&env, K8S_COUNT, K8S_INDEX, K8S_HINT)?;
        let from = format!("{K8S_INDEX}={index} of {K8S_COUNT}={count}");
        return in_range(index, count, from);
    }
    Err(ShardError::NoScheduler)
}

/// What to do when a Kubernetes pod has its index but no count.
const K8S_HINT: &str = "Kubernetes gives a pod only its index: set KD_SHARD_COUNT in the Job's manifest to its completions";

fn from_slurm(
    id: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(Shard, String), ShardError> {
    let id = number(SLURM_ID, id)?;
    let count = required(
        env,
        SLURM_COUNT,
        SLURM_ID,
        "SLURM sets it for every array task",
    )?;
    // SLURM sets the array's first id for every task; an array without it counts from 0.
    let min = env(SLURM_MIN).map(|v| number(SLURM_MIN, &v)).transpose()?;
    if let Some(step) = env(SLURM_STEP)
        .map(|v| number(SLURM_STEP, &v))
        .transpose()?
    {
        if step != 1 {
            return Err(ShardError::NotContiguous(format!("{SLURM_STEP}={step}")));
        }
    }
    if let Some(max) = env(SLURM_MAX).map(|v| number(SLURM_MAX, &v)).transpose()? {
        // A list (--array=1,4,9) has gaps: its span is wider than its count.
        let span = max.checked_sub(min.unwrap_or(0)).map(|d| d + 1);
        if span != Some(count) {
            return Err(ShardError::NotContiguous(format!(
                "{SLURM_MIN}={}, {SLURM_MAX}={max}, {SLURM_COUNT}={count}",
                min.unwrap_or(0)
            )));
        }
    }
    let min_value = min.unwrap_or(0);
    let index = id
        .checked_sub(min_value)
        .ok_or(ShardError::BelowMin { id, min: min_value })?;
    let from = match min {
        Some(min) => format!("{SLURM_ID}={id} − {SLURM_MIN}={min} of {SLURM_COUNT}={count}"),
        None => format!("{SLURM_ID}={id} of {SLURM_COUNT}={count}"),
    };
    in_range(index, count, from)
}

fn required(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    because: &'static str,
    hint: &'static str,
) -> Result<usize, ShardError> {
    let value = env(var).ok_or(ShardError::Missing { var, because, hint })?;
    number(var, &value)
}

fn number(var: &'static str, value: &str) -> Result<usize, ShardError> {
    value.trim().parse().map_err(|_| ShardError::NotANumber {
        var,
        value: value.to_string(),
    })
}

fn in_range(index: usize, count: usize, from: String) -> Result<(Shard, String), ShardError> {
    match Shard::new(index, count) {
        Ok(shard) => Ok((shard, from)),
        Err(_) => Err(ShardError::EnvOutOfRange { index, count, from }),
    }
}

/// A `--shard` that names no one shard.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("`{given}`: expected i/N, e.g. 0/4, or auto")]
    Malformed { given: String },
    #[error("`{value}` is not a whole number ≥ 0 (expected i/N with 0 ≤ i < N)")]
    NotWhole { value: String },
    #[error("shard {index}/{count}: i must be below N")]
    OutOfRange { index: usize, count: usize },
    #[error("--shard auto: {var}={value:?} is not a whole number ≥ 0")]
    NotANumber { var: &'static str, value: String },
    #[error("--shard auto: {because} is set but {var} is not ({hint})")]
    Missing {
        var: &'static str,
        because: &'static str,
        hint: &'static str,
    },
    #[error("--shard auto: the SLURM array is not one contiguous range ({0}): submit it as one range, e.g. --array=0-7 (or 1-8) for 8 shards, so that task i takes shard i")]
    NotContiguous(String),
    #[error("--shard auto: {SLURM_ID}={id} is below {SLURM_MIN}={min}")]
    BelowMin { id: usize, min: usize },
    #[error("--shard auto: {from} gives shard {index}/{count}: the index must be below the count")]
    EnvOutOfRange {
        index: usize,
        count: usize,
        from: String,
    },
    #[error("--shard auto found no scheduler's index: it reads {SLURM_ID} and {SLURM_COUNT} (a SLURM job array; {SLURM_MIN} if set), else {K8S_INDEX} and {K8S_COUNT} (a Kubernetes Indexed Job), and none is set: give --shard i/N instead")]
    NoScheduler,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// `--shard auto` resolved against exactly `vars`, never the process's environment (tests
    /// run side by side).
    fn auto(vars: &[(&str, &str)]) -> Result<Shard, ShardError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ShardSpec::Auto.resolve(|k| map.get(k).cloned())
    }

    fn refused(vars: &[(&str, &str)]) -> String {
        auto(vars).unwrap_err().to_string()
    }

    #[test]
    fn a_typed_shard_parses_and_refuses_what_is_not_one() {
        assert_eq!(
            "2/4".parse::<ShardSpec>().unwrap(),
            ShardSpec::Given(Shard::new(2, 4).unwrap())
        );
        assert_eq!("auto".parse::<ShardSpec>().unwrap(), ShardSpec::Auto);
        let err = |s: &str| s.parse::<ShardSpec>().unwrap_err().to_string();
        assert!(err("-1/4").contains("`-1` is not a whole number"));
        assert!(err("4/4").contains("i must be below N"));
        assert!(err("0/0").contains("i must be below N"));
        assert!(err("3").contains("expected i/N"));
        let given = ShardSpec::Given(Shard::ALL);
        assert_eq!(
            given
                .resolve(|_| panic!("a typed shard reads no variable"))
                .unwrap(),
            Shard::ALL
        );
    }

    #[test]
    fn slurm_arrays_from_0_or_from_1_give_shards_from_0() {
        let from0 = [
            (SLURM_ID, "3"),
            (SLURM_COUNT, "4"),
            (SLURM_MIN, "0"),
            (SLURM_MAX, "3"),
        ];
        assert_eq!(auto(&from0).unwrap(), Shard { index: 3, count: 4 });
        let from1 = [
            (SLURM_ID, "1"),
            (SLURM_COUNT, "4"),
            (SLURM_MIN, "1"),
            (SLURM_MAX, "4"),
        ];
        assert_eq!(auto(&from1).unwrap(), Shard { index: 0, count: 4 });
        // Without SLURM_ARRAY_TASK_MIN (or MAX, STEP) the array counts from 0.
        assert_eq!(
            auto(&[(SLURM_ID, "1"), (SLURM_COUNT, "2")]).unwrap(),
            Shard { index: 1, count: 2 }
        );
        let stepped = [
            (SLURM_ID, "0"),
            (SLURM_COUNT, "4"),
            (SLURM_STEP, "1"),
            (SLURM_MAX, "3"),
        ];
        assert_eq!(auto(&stepped).unwrap(), Shard { index: 0, count: 4 });
        // SLURM wins over Kubernetes when both are set.
        let both = [
            (SLURM_ID, "1"),
            (SLURM_COUNT, "2"),
            (K8S_INDEX, "0"),
            (K8S_COUNT, "3"),
        ];
        assert_eq!(auto(&both).unwrap(), Shard { index: 1, count: 2 });
        let (_, from) = from_scheduler(|k| {
            from1
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        assert_eq!(
            from,
            "SLURM_ARRAY_TASK_ID=1 − SLURM_ARRAY_TASK_MIN=1 of SLURM_ARRAY_TASK_COUNT=4"
        );
    }

    #[test]
    fn inconsistent_slurm_variables_are_refused_naming_them() {
        let e = refused(&[(SLURM_ID, "4"), (SLURM_COUNT, "4")]);
        assert!(
            e.contains("gives shard 4/4") && e.contains("SLURM_ARRAY_TASK_ID=4"),
            "{e}"
        );
        let e = refused(&[
            (SLURM_ID, "5"),
            (SLURM_COUNT, "4"),
            (SLURM_MIN, "1"),
            (SLURM_MAX, "4"),
        ]);
        assert!(
            e.contains("ID=5 − SLURM_ARRAY_TASK_MIN=1 of SLURM_ARRAY_TASK_COUNT=4 gives shard 4/4"),
            "{e}"
        );
        let e = refused(&[(SLURM_ID, "x1"), (SLURM_COUNT, "4")]);
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID=\"x1\" is not a whole number"),
            "{e}"
        );
        let e = refused(&[(SLURM_ID, "1"), (SLURM_COUNT, "")]);
        assert!(
            e.contains("SLURM_ARRAY_TASK_COUNT=\"\" is not a whole number"),
            "{e}"
        );
        let e = refused(&[(SLURM_ID, "1")]);
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not"),
            "{e}"
        );
        let e = refused(&[(SLURM_ID, "0"), (SLURM_COUNT, "4"), (SLURM_MIN, "1")]);
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID=0 is below SLURM_ARRAY_TASK_MIN=1"),
            "{e}"
        );
        // --array=0-6:2 and --array=1,4,9: task i would not be shard i.
        let e = refused(&[(SLURM_ID, "2"), (SLURM_COUNT, "4"), (SLURM_STEP, "2")]);
        assert!(
            e.contains("not one contiguous range") && e.contains("STEP=2"),
            "{e}"
        );
        let list = [
            (SLURM_ID, "4"),
            (SLURM_COUNT, "3"),
            (SLURM_MIN, "1"),
            (SLURM_MAX, "9"),
        ];
        assert!(refused(&list).contains("not one contiguous range"));
    }

    #[test]
    fn a_kubernetes_index_takes_its_count_from_kd_shard_count() {
        assert_eq!(
            auto(&[(K8S_INDEX, "2"), (K8S_COUNT, "3")]).unwrap(),
            Shard { index: 2, count: 3 }
        );
        let e = refused(&[(K8S_INDEX, "2")]);
        assert!(
            e.contains("JOB_COMPLETION_INDEX is set but KD_SHARD_COUNT is not")
                && e.contains("completions"),
            "{e}"
        );
        let e = refused(&[(K8S_INDEX, "3"), (K8S_COUNT, "3")]);
        assert!(
            e.contains("JOB_COMPLETION_INDEX=3 of KD_SHARD_COUNT=3 gives shard 3/3"),
            "{e}"
        );
        let e = refused(&[(K8S_INDEX, "1"), (K8S_COUNT, "three")]);
        assert!(e.contains("KD_SHARD_COUNT=\"three\""), "{e}");
        assert!(refused(&[(K8S_INDEX, "0"), (K8S_COUNT, "0")]).contains("gives shard 0/0"));
    }

    #[test]
    fn auto_without_a_scheduler_names_the_variables_it_read() {
        // KD_SHARD_COUNT alone is no index.
        let e = refused(&[(K8S_COUNT, "4"), ("SLURM_JOB_ID", "77")]);
        for var in [
            SLURM_ID,
            SLURM_COUNT,
            SLURM_MIN,
            K8S_INDEX,
            K8S_COUNT,
            "--shard i/N",
        ] {
            assert!(e.contains(var), "{var}: {e}");
        }
    }
}
