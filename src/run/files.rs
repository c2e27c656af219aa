//! Names of the files in a run folder.
pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.jsonl";
pub const SUMMARY: &str = "summary.json";
pub const LOGITS: &str = "logits.bin";
/// The teacher's sentence representations (`kd teach --cache-representations`).
pub const REPRESENTATIONS: &str = "representations.bin";
