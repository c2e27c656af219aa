//! The command line: argument definitions and how they override a config file.
use clap::{Args, Parser, Subcommand};
use kd::commands::RunConfig;
use kd::training::{Shard, CACHE_CHUNK_ROWS};
use std::path::PathBuf;

/// The teacher and student configs shipped in configs/, used when no --config is given and
/// configs/ is not in the working directory.
pub const DEFAULT_TEACHER: &str = include_str!("../../configs/teacher.toml");
pub const DEFAULT_STUDENT: &str = include_str!("../../configs/student.toml");

mod train;
pub use train::TrainArgs;

#[derive(Parser)]
#[command(
    name = "kd",
    version,
    about = "Knowledge distillation of text classifiers: a LoRA teacher, its cached logits, a small student.",
    long_about = "Knowledge distillation of text classifiers on candle.\n\n\
  1. kd teach     fine-tunes a teacher encoder with LoRA and caches its logits in teacher/logits.bin\n\
                  (--unlabelled FILE scores a transfer set too; kd cache scores one later, in shards)\n\
  2. kd distill   trains a student under a parameter budget on α·T²·KL + (1−α)·CE, from that cache\n\
                  (kd sweep trains a T × α × seed grid of students from one cache)\n\
  3. kd compare   evaluates run folders side by side on the test split (accuracy, F1, NLL, ECE)\n\
  4. kd predict   labels new rows with a trained run; kd export writes it as a transformers folder\n\
  5. kd bench     measures training and caching throughput; kd selftest checks a GPU against the CPU\n\n\
Models are local checkpoint folders (config.json, model.safetensors, tokenizer.json) or Hub ids;\n\
datasets are folders with train.* / test.* (AG News CSV, JSONL or Parquet; --text-column and\n\
--label-column for others) or Hub ids. An interrupted run resumes when the same command is run again.\n\
Logging: RUST_LOG=kd=debug for more, RUST_LOG=warn for less."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Fine-tune the teacher with LoRA, then cache its logits over every training row.
    ///
    /// Writes OUT/: config.toml, adapter_config.json + adapter_model.safetensors (PEFT layout),
    /// metrics.jsonl, summary.json and logits.bin.
    Teach(TrainArgs),
    /// Train the student on the teacher's cached logits (the teacher is never run).
    ///
    /// Refuses a student whose trainable parameters are not under --budget, with a per-module
    /// breakdown, and a logits.bin made from other training rows.
    Distill(DistillArgs),
    /// Train one student per point of a T × α × seed grid from one teacher cache.
    ///
    /// The data is prepared and tokenized once; each point is a run folder OUT/T{t}_a{α}_s{seed}
    /// (OUT/a0_s{seed} for α = 0); a rerun skips finished points. Writes OUT/sweep.json and
    /// OUT/sweep.md: accuracy and macro-F1 per (T, α) as mean ± sd over seeds, and the paired
    /// difference against α = 0 of the same seed (mean ± standard error).
    Sweep(SweepArgs),
    /// Score unlabelled rows with a finished teacher, without retraining it.
    ///
    /// Keeps the labelled rows' logits and replaces the teacher's unlabelled rows with those of
    /// --unlabelled, in one step. Large transfer sets: run `--shard i/N` for i = 0..N-1 anywhere
    /// (a SLURM array, a Kubernetes Job), each writing TEACHER.cache-parts/part-i-of-N.bin, then
    /// `--merge` (same --unlabelled): the result equals a single process's, bit for bit.
    Cache(CacheArgs),
    /// Evaluate run folders (or PEFT adapters) on the test split, side by side.
    Compare(CompareArgs),
    /// Write report.md with tables and pictures (SVG + PNG) for runs and sweeps.
    ///
    /// Run folders are evaluated on the test split as `kd compare` does; the report draws their
    /// training-loss and validation-accuracy curves (metrics.jsonl), a confusion matrix and a
    /// reliability diagram per run (before and after --calibrate where a run has it), and a
    /// T × α heat map per sweep folder (one holding sweep.json). OUT is replaced whole.
    Report(ReportArgs),
    /// Write a trained run as a plain transformers folder (no PEFT, no kd needed).
    ///
    /// OUT gets config.json (architectures, id2label), model.safetensors with every LoRA update
    /// merged into its base weight and the head under the architecture's own names, and the
    /// tokenizer files: AutoModelForSequenceClassification.from_pretrained(OUT) loads it.
    Export(ExportArgs),
    /// Label unlabelled rows with a trained run; writes row,label,label_name,logit_*,prob_* as CSV.
    Predict(PredictArgs),
    /// Measure training and logit-caching throughput (samples/s, tokens/s, peak memory, MFU).
    ///
    /// Times training steps and the caching pass on real AG News texts (repeated to fill the
    /// run), for a checkpoint (--model) or a random model of a named shape (--shape roberta-base
    /// --tokenizer DIR: no weights needed). Compare with bench/peer_hf.py (same keys).
    Bench(BenchArgs),
    /// Dump logits and gradients for scripts/real_shape_parity.py (developer tool).
    #[command(hide = true)]
    ParityDump {
        model: String,
        adapter: PathBuf,
        data: PathBuf,
        rows: usize,
        out: PathBuf,
        #[arg(default_value = "cpu")]
        device: String,
        #[arg(default_value = "f32")]
        dtype: String,
    },
    /// Check a device against the CPU reference (logits and every gradient of a random model).
    ///
    /// One random model is built in f32 on the CPU and in --dtype on --device; its logits and the
    /// gradients of every trainable tensor must agree (bf16: within 5e-2 relative). Exits
    /// non-zero when they do not. Needs no files: run it first on a new GPU machine.
    Selftest {
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value = "auto")]
        dtype: String,
    },
}

#[derive(Args)]
pub struct BenchArgs {
    /// Checkpoint folder or Hub id
    #[arg(long, conflicts_with = "shape")]
    pub model: Option<String>,
    /// Random weights of a named shape: roberta-base or small
    #[arg(long)]
    pub shape: Option<String>,
    /// Tokenizer folder for --shape (tokenizer.json or vocab.json + merges.txt)
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// AG News texts, e.g. ../shared/data/ag_news/test.csv.gz
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    /// Untimed steps first
    #[arg(long, default_value_t = 3)]
    pub warmup_steps: usize,
    /// Timed training steps
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Rows in the timed caching pass
    #[arg(long, default_value_t = 1024)]
    pub cache_rows: usize,
    #[arg(long, default_value_t = 128)]
    pub cache_batch_size: usize,
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 32.0)]
    pub lora_alpha: f64,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Peak dense TFLOP/s for the MFU (H100 bf16: 800)
    #[arg(long, default_value_t = 800.0)]
    pub peak_tflops: f64,
    /// Also write the report as JSON here
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct DistillArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// The teacher's run folder (its logits.bin is memory-mapped). Repeat it to distil from an
    /// ensemble: the mean of the teachers' probabilities at temperature T (teachers may have
    /// other backbones and tokenizers than the student; their caches must hold the same rows)
    #[arg(long)]
    pub teacher: Vec<PathBuf>,
    /// Softmax temperature T of the KD term
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Weight α of the KD term; 0 trains on the labels alone
    #[arg(long)]
    pub alpha: Option<f64>,
    /// The student must have fewer trainable parameters than this
    #[arg(long)]
    pub budget: Option<usize>,
}

#[derive(Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// The teacher's run folder (repeat for an ensemble)
    #[arg(long)]
    pub teacher: Vec<PathBuf>,
    /// The student must have fewer trainable parameters than this
    #[arg(long)]
    pub budget: Option<usize>,
    /// Temperatures, comma-separated, e.g. 1,2,4,8
    #[arg(long, value_delimiter = ',', required = true)]
    pub temperature: Vec<f64>,
    /// KD weights α, comma-separated, e.g. 0,0.5,0.9 (0 = labels alone, the paired baseline)
    #[arg(long, value_delimiter = ',', required = true)]
    pub alpha: Vec<f64>,
    /// Seeds, comma-separated, e.g. 0,1,2,3
    #[arg(long, value_delimiter = ',', required = true)]
    pub seeds: Vec<u64>,
}

#[derive(Args)]
pub struct CacheArgs {
    /// The teacher's run folder
    pub teacher: PathBuf,
    /// Unlabelled file to score (repeatable; formats as for kd teach --unlabelled)
    #[arg(long, required = true)]
    pub unlabelled: Vec<PathBuf>,
    /// Score only every N-th chunk, starting at chunk i, into a part file (i/N, 0 ≤ i < N)
    #[arg(long, value_parser = parse_shard, conflicts_with = "merge")]
    pub shard: Option<Shard>,
    /// Join the part files of a sharded pass into the teacher's cache
    #[arg(long)]
    pub merge: bool,
    /// Rows per caching chunk (must be the same for every shard and the merge)
    #[arg(long, default_value_t = CACHE_CHUNK_ROWS, hide = true,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub chunk_rows: usize,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value = "auto")]
    pub dtype: String,
}

/// Parses `i/N` with 0 ≤ i < N.
fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected i/N, e.g. 0/4"))?;
    let (index, count): (usize, usize) = (
        i.trim()
            .parse()
            .map_err(|_| format!("`{i}` is not a number"))?,
        n.trim()
            .parse()
            .map_err(|_| format!("`{n}` is not a number"))?,
    );
    if index >= count {
        return Err(format!("shard {index}/{count}: i must be below N"));
    }
    Ok(Shard { index, count })
}

#[derive(Args)]
pub struct CompareArgs {
    /// Run folders to evaluate (e.g. teacher student)
    pub runs: Vec<PathBuf>,
    /// PEFT adapter folders to evaluate as well (with --model)
    #[arg(long)]
    pub adapter: Vec<PathBuf>,
    /// Base model for --adapter folders [default: the adapter's base_model_name_or_path]
    #[arg(long)]
    pub model: Option<String>,
    /// Where to write the comparison as JSON
    #[arg(long, default_value = "compare.json")]
    pub json: PathBuf,
    #[command(flatten)]
    pub eval: EvalArgs,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Run folders (compared in the order given) and sweep folders (folders with sweep.json)
    #[arg(required = true)]
    pub folders: Vec<PathBuf>,
    /// The report folder (new, empty, or an earlier report: it is replaced whole)
    #[arg(long, default_value = "report")]
    pub out: PathBuf,
    #[command(flatten)]
    pub eval: EvalArgs,
}

/// How compare and report evaluate runs on a test split.
#[derive(Args)]
pub struct EvalArgs {
    /// Dataset whose test split is used [default: the first run's dataset]
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Truncate every model's inputs to this many tokens [default: each run's own; 128 for
    /// compare's --adapter folders]
    #[arg(long)]
    pub max_len: Option<usize>,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The run folder to export
    pub run: Option<PathBuf>,
    /// A PEFT adapter folder instead of a run folder (with --model)
    #[arg(long, conflicts_with = "run")]
    pub adapter: Option<PathBuf>,
    /// Base model for --adapter [default: the adapter's base_model_name_or_path]
    #[arg(long)]
    pub model: Option<String>,
    /// The folder to create
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct PredictArgs {
    /// The run folder to predict with
    pub run: Option<PathBuf>,
    /// A PEFT adapter folder instead of a run folder (with --model)
    #[arg(long, conflicts_with = "run")]
    pub adapter: Option<PathBuf>,
    /// Base model for --adapter [default: the adapter's base_model_name_or_path]
    #[arg(long)]
    pub model: Option<String>,
    /// Rows to label (.csv/.csv.gz with optional class column, .jsonl, .parquet)
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, default_value = "preds.csv")]
    pub output: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Truncate rows to this many tokens [default: the run's own, 128 for --adapter]
    #[arg(long)]
    pub max_len: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
}

/// Reads --config, else configs/<name>.toml in the working directory, else the built-in copy.
pub fn base_config(path: Option<&PathBuf>, name: &str, builtin: &str) -> anyhow::Result<RunConfig> {
    if let Some(p) = path {
        return Ok(RunConfig::from_file(p)?);
    }
    let local = PathBuf::from("configs").join(format!("{name}.toml"));
    if local.is_file() {
        return Ok(RunConfig::from_file(&local)?);
    }
    Ok(toml::from_str(builtin)?)
}
