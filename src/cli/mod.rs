//! The command line: every command's flags, and how the training flags override a config file.
//!
//! Each command's arguments turn themselves into the request (or run config) its library
//! function takes, so `main.rs` only dispatches and prints.
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod augment;
mod device;
mod eval;
mod serve;
mod tools;
mod train;
pub use augment::AugmentArgs;
pub use device::DeviceArgs;
pub use eval::{CompareArgs, ExportArgs, PredictArgs, ReportArgs};
pub use serve::ServeArgs;
pub use tools::{BenchArgs, CacheArgs};
pub use train::{DistillArgs, SweepArgs, TeachArgs};

/// `0.1.0 (commit)`: the commit build.rs read (`+modified` for uncommitted sources).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KD_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "kd",
    version = VERSION,
    about = "Knowledge distillation of text classifiers: a LoRA teacher, its cached logits, a small student.",
    long_about = "Knowledge distillation of text classifiers on candle.\n\n\
  1. kd teach     fine-tunes a teacher encoder with LoRA and caches its logits in teacher/logits.bin\n\
                  (--unlabelled FILE scores a transfer set too; kd cache scores one later, in shards)\n\
  2. kd distill   trains a student under a parameter budget on α·T²·KL + (1−α)·CE, from that cache\n\
                  (+ β·L_repr with --repr-weight: the teacher's cached representations, projected)\n\
                  (kd sweep trains a T × α × seed grid of students from one cache)\n\
  3. kd compare   evaluates run folders side by side on the test split (accuracy, F1, NLL, ECE)\n\
  4. kd predict   labels new rows with a trained run; kd export writes it as a transformers folder\n\
                  (kd serve answers predictions over HTTP, in text-embeddings-inference's shape)\n\
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
    /// metrics.jsonl, summary.json and logits.bin (and representations.bin with
    /// --cache-representations).
    Teach(TeachArgs),
    /// Train the student on the teacher's cached logits (the teacher is never run).
    ///
    /// Refuses a student whose trainable parameters are not under --budget, with a per-module
    /// breakdown, and a logits.bin made from other training rows. --repr-weight β adds
    /// β·L_repr: the student's representation, projected to the teacher's width, matched to the
    /// teacher's representations.bin (cosine or mse).
    Distill(DistillArgs),
    /// Train one student per point of a T × α × seed grid from one teacher cache.
    ///
    /// The data is prepared and tokenized once; each point is a run folder OUT/T{t}_a{α}_s{seed}
    /// (OUT/a0_s{seed} for α = 0); a rerun skips finished points. Writes OUT/sweep.json and
    /// OUT/sweep.md: accuracy and macro-F1 per (T, α) as mean ± sd over seeds, and the paired
    /// difference against α = 0 of the same seed (mean ± standard error). `--shard i/N|auto`
    /// trains the points p with p % N = i (in sweep.json's order) and writes no sweep.json;
    /// `--merge` (same flags) trains nothing and writes it from the finished points.
    Sweep(SweepArgs),
    /// Score unlabelled rows with a finished teacher, without retraining it.
    ///
    /// Keeps the labelled rows' logits and replaces the teacher's unlabelled rows with those of
    /// --unlabelled, in one step. Large transfer sets: run `--shard i/N` for i = 0..N-1 anywhere
    /// (a SLURM array, a Kubernetes Job: `--shard auto` reads i/N from their variables), each
    /// writing TEACHER.cache-parts/part-i-of-N.bin, then `--merge` (same --unlabelled): the
    /// result equals a single process's, bit for bit. See deploy/ in kd's repository. A teacher
    /// with representations.bin has the new rows' representations scored too;
    /// `--representations` adds them to a teacher without.
    Cache(CacheArgs),
    /// Write N variants of every row (masking, shuffles, n-grams) as an unlabelled transfer file.
    ///
    /// Tang et al. 2019's augmentation, seeded: the same inputs and --seed write the same bytes.
    /// Score the file like any transfer set: kd cache TEACHER --unlabelled OUT.
    Augment(AugmentArgs),
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
    /// Answer predictions over HTTP: POST /predict, GET /health, GET /metrics (Prometheus).
    ///
    /// /predict takes text-embeddings-inference's body ({"inputs": "a text"}, a pair
    /// ["a", "b"], or a batch [["a"], ["b", "c"]]) and answers its shape: [{"score", "label"}]
    /// per input, best first, plus the class "id". Requests are gathered into batches of up to
    /// --max-batch rows within --max-wait-ms; past --queue-size waiting requests the answer is
    /// 503. Prints `listening on http://HOST:PORT` once bound; SIGTERM or Ctrl-C stops it after
    /// the requests in flight are answered.
    Serve(ServeArgs),
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
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Check a device against the CPU reference (logits and every gradient of a random model).
    ///
    /// One random model is built in f32 on the CPU and in --dtype on --device; its logits and the
    /// gradients of every trainable tensor must agree (bf16: within 5e-2 relative). Exits
    /// non-zero when they do not. Needs no files: run it first on a new GPU machine.
    Selftest {
        #[command(flatten)]
        device: DeviceArgs,
    },
}
