//! The training commands' flags: `TrainArgs` (what `teach`, `distill` and `sweep` share, each
//! overriding the config file) and the distillation flags on top, each turning itself into the
//! run config or request its command takes.
use super::device::DeviceArgs;
use anyhow::Context;
use clap::Args;
use kd::commands::sweep::SweepMode;
use kd::commands::RunConfig;
use kd::model::TargetModules;
use kd::run::limits::{
    self, real_in, whole_number, Limit::AtLeast, CLASSES, COUNT, TEMPERATURE, WEIGHT,
};
use kd::shard::ShardSpec;
use std::path::PathBuf;

/// The teacher and student configs shipped in configs/, used when no --config is given and
/// configs/ is not in the working directory.
const DEFAULT_TEACHER: &str = include_str!("../../configs/teacher.toml");
const DEFAULT_STUDENT: &str = include_str!("../../configs/student.toml");

/// Settings shared by `teach` and `distill`; each overrides the config file.
#[derive(Args)]
pub struct TrainArgs {
    /// TOML config [default: configs/teacher.toml or configs/student.toml]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Checkpoint folder or Hugging Face Hub id (e.g. roberta-base)
    #[arg(long)]
    pub model: Option<String>,
    /// Dataset folder with train.*/test.* or Hub id (e.g. fancyzhx/ag_news)
    #[arg(long)]
    pub data: Option<String>,
    /// Unlabelled file (a transfer set; repeatable): CSV with "title","description" or one text
    /// column, JSONL without `label`, Parquet; .gz too. `kd teach` scores these rows into its
    /// cache; `kd distill` (with the same files) trains on them with T²·KL alone, and on labelled
    /// rows with α·T²·KL + (1−α)·CE; an epoch is one pass over both
    #[arg(long)]
    pub unlabelled: Vec<PathBuf>,
    /// Text column (repeatable, joined with a space): CSV files then start with a header row;
    /// JSONL fields and Parquet columns by name [default: AG News CSV, else `text`]
    #[arg(long)]
    pub text_column: Vec<String>,
    /// Second text column of sentence pairs (tokenized as transformers tokenizes a pair)
    #[arg(long)]
    pub text_pair_column: Option<String>,
    /// Label column: integers 0..K−1 or strings (mapped to classes in sorted order, or in
    /// --label-names order) [default: `label`]
    #[arg(long)]
    pub label_column: Option<String>,
    /// Class names in class order, comma-separated (e.g. World,Sports,Business,Sci/Tech); by
    /// default those a Hub Parquet file's ClassLabel metadata gives
    #[arg(long, value_delimiter = ',')]
    pub label_names: Option<Vec<String>>,
    /// Run folder to write
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Passes over the training rows (which epoch is kept: --select)
    #[arg(long, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps (the schedule spans them)
    #[arg(long, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub max_steps: Option<usize>,
    /// Rows per optimizer step
    #[arg(long, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (linear warmup, then cosine decay to 0)
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Truncate rows to this many tokens (special tokens included; at least one more than the
    /// tokenizer adds)
    #[arg(long, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub max_len: Option<usize>,
    /// Seed of the split, shuffling, dropout and adapter initialisation (same seed, same run)
    #[arg(long, value_parser = limits::seed, allow_negative_numbers = true)]
    pub seed: Option<u64>,
    /// Fraction of each class held out of train for validation when the data has no
    /// validation.*/val.* split; 0 trains on every row and keeps the last epoch
    #[arg(long, allow_negative_numbers = true)]
    pub val_fraction: Option<f64>,
    /// Which epoch to keep: `loss` = lowest validation NLL, `accuracy`, or `last`. An earlier
    /// epoch is kept only when the validation slice has at least 500 rows and its score beats
    /// the last epoch's by more than one standard error (paired over rows) [default: loss]
    #[arg(long, value_enum)]
    pub select: Option<kd::training::Select>,
    /// After training, fit a softmax temperature on the validation rows (temperature scaling:
    /// accuracy unchanged, probabilities calibrated); predict and compare use it
    #[arg(long)]
    pub calibrate: bool,
    /// Number of classes (labels 0..K−1); by default the training split's largest label + 1,
    /// every class needing training rows
    #[arg(long, value_parser = whole_number(CLASSES), allow_negative_numbers = true)]
    pub num_labels: Option<usize>,
    /// Checkpoint every N optimizer steps [default: every 5 minutes of training, and every epoch].
    /// An interrupted run (Ctrl-C, SIGTERM, a crash, kill -9) resumes when the same command is run
    /// again, and ends with the bits an uninterrupted run ends with
    #[arg(long, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub checkpoint_every: Option<usize>,
    /// Start over, discarding what an interrupted run left
    #[arg(long)]
    pub fresh: bool,
    /// Rows per chunk of the teacher's caching pass (kept as each is scored)
    #[arg(long, hide = true, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub cache_chunk_rows: Option<usize>,
    /// Label smoothing of the cross-entropy term
    #[arg(long, allow_negative_numbers = true)]
    pub label_smoothing: Option<f64>,
    /// Warmup as a fraction of all steps
    #[arg(long, allow_negative_numbers = true)]
    pub warmup_ratio: Option<f64>,
    /// LoRA rank
    #[arg(long, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub lora_r: Option<usize>,
    /// LoRA α (the update is scaled by α/r)
    #[arg(long, allow_negative_numbers = true)]
    pub lora_alpha: Option<f64>,
    /// Comma-separated LoRA target modules (PEFT suffix matching), e.g. query,value
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// Comma-separated layer indices to adapt (PEFT's layers_to_transform)
    #[arg(long, value_delimiter = ',', value_parser = whole_number(AtLeast(0)), allow_hyphen_values = true)]
    pub layers: Option<Vec<usize>>,
    /// BERT-family models: train the checkpoint's pooler with the classifier (`trainable`, PEFT's
    /// modules_to_save=["classifier", "pooler"]) or keep it as it is (`frozen`, PEFT's default)
    #[arg(long, value_enum)]
    pub pooler: Option<kd::model::head::Pooler>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl TrainArgs {
    /// `kd teach`'s run config: the teacher config with these flags over it.
    pub fn teacher_config(&self) -> anyhow::Result<RunConfig> {
        let mut cfg = base_config(self.config.as_ref(), "teacher", DEFAULT_TEACHER)?;
        self.apply(&mut cfg);
        cfg.distill = None;
        Ok(cfg)
    }

    /// The student config with these flags, `--teacher` and `--budget` over it.
    fn student_config(
        &self,
        teacher: &[PathBuf],
        budget: Option<usize>,
    ) -> anyhow::Result<RunConfig> {
        let mut cfg = base_config(self.config.as_ref(), "student", DEFAULT_STUDENT)?;
        self.apply(&mut cfg);
        let d = cfg
            .distill
            .as_mut()
            .context("the student config has no [distill] table")?;
        if !teacher.is_empty() {
            d.teacher = teacher.to_vec();
        }
        if let Some(b) = budget {
            d.budget = b;
        }
        Ok(cfg)
    }

    /// Applies every flag that was given on top of `cfg`.
    fn apply(&self, cfg: &mut RunConfig) {
        macro_rules! set {
            ($flag:expr => $field:expr) => {
                if let Some(v) = &$flag {
                    $field = v.clone();
                }
            };
        }
        set!(self.model => cfg.model);
        set!(self.data => cfg.data);
        set!(self.out => cfg.out);
        if self.label_names.is_some() {
            cfg.label_names = self.label_names.clone();
        }
        if !self.text_column.is_empty() {
            cfg.columns.text = self.text_column.clone();
        }
        if self.label_column.is_some() {
            cfg.columns.label = self.label_column.clone();
        }
        if self.text_pair_column.is_some() {
            cfg.columns.text_pair = self.text_pair_column.clone();
        }
        if !self.unlabelled.is_empty() {
            cfg.unlabelled = self.unlabelled.clone();
        }
        set!(self.device.device => cfg.device);
        set!(self.device.dtype => cfg.dtype);
        set!(self.epochs => cfg.train.epochs);
        set!(self.batch_size => cfg.train.batch_size);
        set!(self.lr => cfg.train.lr);
        set!(self.max_len => cfg.train.max_len);
        set!(self.seed => cfg.train.seed);
        set!(self.val_fraction => cfg.train.val_fraction);
        set!(self.select => cfg.train.select);
        if self.checkpoint_every.is_some() {
            cfg.train.checkpoint_every = self.checkpoint_every;
        }
        cfg.train.fresh = self.fresh;
        set!(self.cache_chunk_rows => cfg.train.cache_chunk_rows);
        if self.num_labels.is_some() {
            cfg.train.num_labels = self.num_labels;
        }
        if self.calibrate {
            cfg.train.calibrate = true;
        }
        set!(self.label_smoothing => cfg.train.label_smoothing);
        set!(self.warmup_ratio => cfg.train.warmup_ratio);
        set!(self.lora_r => cfg.lora.r);
        set!(self.lora_alpha => cfg.lora.alpha);
        set!(self.pooler => cfg.lora.pooler);
        if self.max_steps.is_some() {
            cfg.train.max_steps = self.max_steps;
        }
        if let Some(t) = &self.targets {
            cfg.lora.targets = TargetModules::Suffixes(t.clone());
        }
        if self.layers.is_some() {
            cfg.lora.layers = self.layers.clone();
        }
    }
}

/// `kd teach`'s flags: the training flags and what the caching pass writes.
#[derive(Args)]
pub struct TeachArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// Also cache every row's sentence representation (the first token's last hidden state,
    /// hidden-size wide, bf16) in OUT/representations.bin, for students distilled with
    /// --repr-weight. kd cache keeps it in step when it scores new unlabelled rows
    #[arg(long)]
    pub cache_representations: bool,
}

impl TeachArgs {
    /// `kd teach`'s run config: the teacher config with these flags over it.
    pub fn teacher_config(&self) -> anyhow::Result<RunConfig> {
        let mut cfg = self.train.teacher_config()?;
        if self.cache_representations {
            cfg.train.cache_representations = true;
        }
        Ok(cfg)
    }
}

/// Reads --config, else configs/<name>.toml in the working directory, else the built-in copy.
fn base_config(path: Option<&PathBuf>, name: &str, builtin: &str) -> anyhow::Result<RunConfig> {
    if let Some(p) = path {
        return Ok(RunConfig::from_file(p)?);
    }
    let local = PathBuf::from("configs").join(format!("{name}.toml"));
    if local.is_file() {
        return Ok(RunConfig::from_file(&local)?);
    }
    RunConfig::from_toml(builtin).map_err(|e| anyhow::anyhow!("built-in {name} config: {e:?}"))
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
    /// Softmax temperature T of the KD term, in (0, 100]
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Weight α of the KD term, in [0, 1]; 0 trains on the labels alone
    #[arg(long, allow_negative_numbers = true)]
    pub alpha: Option<f64>,
    /// The student must have fewer trainable parameters than this (while training, the
    /// --repr-weight projection counts too; it is not exported)
    #[arg(long, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub budget: Option<usize>,
    /// Weight β of the representation term: the student's first-token representation, through
    /// a trained linear projection to the teacher's width, matched to the teacher's cached
    /// representations (kd teach --cache-representations); 0 leaves it out [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    pub repr_weight: Option<f64>,
    /// How --repr-weight compares representations: cosine (1 − cos, DistilBERT's) or mse
    /// [default: cosine]
    #[arg(long, value_enum)]
    pub repr_loss: Option<kd::training::ReprLoss>,
}

impl DistillArgs {
    /// `kd distill`'s run config: the student config with every flag over it.
    pub fn into_config(self) -> anyhow::Result<RunConfig> {
        let mut cfg = self.train.student_config(&self.teacher, self.budget)?;
        let d = cfg.distill.as_mut().expect("student_config checked it");
        if let Some(t) = self.temperature {
            d.temperature = t;
        }
        if let Some(a) = self.alpha {
            d.alpha = a;
        }
        if let Some(b) = self.repr_weight {
            d.repr_weight = b;
        }
        if let Some(l) = self.repr_loss {
            d.repr_loss = l;
        }
        anyhow::ensure!(
            !(self.repr_loss.is_some() && d.repr_weight == 0.0),
            "--repr-loss has no effect without --repr-weight β > 0"
        );
        anyhow::ensure!(
            !(self.temperature.is_some() && d.alpha == 0.0),
            "--temperature has no effect with --alpha 0 (labels alone)"
        );
        Ok(cfg)
    }
}

#[derive(Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    /// The teacher's run folder (repeat for an ensemble)
    #[arg(long)]
    pub teacher: Vec<PathBuf>,
    /// The student must have fewer trainable parameters than this
    #[arg(long, value_parser = whole_number(COUNT), allow_negative_numbers = true)]
    pub budget: Option<usize>,
    /// Temperatures, comma-separated, e.g. 1,2,4,8 (each in (0, 100])
    #[arg(long, value_delimiter = ',', required = true, allow_hyphen_values = true,
          value_parser = real_in(TEMPERATURE))]
    pub temperature: Vec<f64>,
    /// KD weights α, comma-separated, e.g. 0,0.5,0.9 (0 = labels alone, the paired baseline)
    #[arg(long, value_delimiter = ',', required = true, allow_hyphen_values = true,
          value_parser = real_in(WEIGHT))]
    pub alpha: Vec<f64>,
    /// Seeds, comma-separated, e.g. 0,1,2,3
    #[arg(long, value_delimiter = ',', required = true, allow_hyphen_values = true,
          value_parser = limits::seed)]
    pub seeds: Vec<u64>,
    /// Train only the points p with p % N = i (i/N; auto: from SLURM_ARRAY_TASK_ID/COUNT, or
    /// JOB_COMPLETION_INDEX and KD_SHARD_COUNT); writes no sweep.json (kd sweep --merge does)
    #[arg(long, value_parser = super::tools::parse_shard, conflicts_with = "merge",
          allow_hyphen_values = true)]
    pub shard: Option<ShardSpec>,
    /// Train nothing: check that the shards finished every point, from these very settings
    /// and inputs, and write sweep.json and sweep.md
    #[arg(long)]
    pub merge: bool,
}

impl SweepArgs {
    /// `kd sweep`'s request: the student config as `kd distill` builds it, and the grid.
    pub fn into_request(self) -> anyhow::Result<kd::commands::sweep::SweepRequest> {
        // A scheduler's bad index is refused before anything is read.
        let mode = match (super::tools::resolve_shard(self.shard)?, self.merge) {
            (Some(shard), _) => SweepMode::Shard(shard),
            (None, true) => SweepMode::Merge,
            (None, false) => SweepMode::Whole,
        };
        let base = self.train.student_config(&self.teacher, self.budget)?;
        Ok(kd::commands::sweep::SweepRequest {
            base,
            temperatures: self.temperature,
            alphas: self.alpha,
            seeds: self.seeds,
            out: self.train.out.unwrap_or_else(|| "sweep".into()),
            mode,
        })
    }
}
