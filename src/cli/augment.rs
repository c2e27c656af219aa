//! The flags of `kd augment` (augmented transfer sets).
use clap::Args;
use kd::commands::augment::AugmentRequest;
use kd::data::augment::Augmentation;
use kd::data::Columns;
use kd::run::limits::{real_in, seed, whole, COUNT, WEIGHT};
use std::path::PathBuf;

#[derive(Args)]
pub struct AugmentArgs {
    /// Files whose rows to vary: labelled or unlabelled, any format kd reads (labels are not
    /// written)
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The transfer file to write: .jsonl or .csv, with the columns below (give the teacher's)
    #[arg(long)]
    pub out: PathBuf,
    /// Variants per row (Tang et al.'s n_iter; duplicates are drawn again, a short row may have
    /// fewer)
    #[arg(long, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub variants: usize,
    /// Seed: the same inputs and seed write the same bytes
    #[arg(long, value_parser = seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Probability that a word is masked (left out: no mask token means the same to every
    /// tokenizer)
    #[arg(long, default_value_t = 0.1, value_parser = real_in(WEIGHT), allow_negative_numbers = true)]
    pub mask_prob: f64,
    /// Probability that a word is swapped with another within --shuffle-window (in place of
    /// Tang et al.'s POS-guided replacement; with --mask-prob at most 1)
    #[arg(long, default_value_t = 0.1, value_parser = real_in(WEIGHT), allow_negative_numbers = true)]
    pub shuffle_prob: f64,
    /// How many places a swapped word may move
    #[arg(long, default_value_t = 3, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub shuffle_window: usize,
    /// Probability that a variant is cut to one of its n-grams
    #[arg(long, default_value_t = 0.25, value_parser = real_in(WEIGHT), allow_negative_numbers = true)]
    pub ngram_prob: f64,
    /// The longest n-gram cut (n is uniform in 1..=N)
    #[arg(long, default_value_t = 5, value_parser = whole(COUNT), allow_negative_numbers = true)]
    pub ngram_max: usize,
    /// Leave out rows of one word (counted) instead of refusing them
    #[arg(long)]
    pub skip_short: bool,
    /// Text column, as for kd teach (one: the variant is one text) [default: AG News CSV, else
    /// `text`]
    #[arg(long)]
    pub text_column: Vec<String>,
    /// Second text column of sentence pairs (both texts are varied)
    #[arg(long)]
    pub text_pair_column: Option<String>,
    /// Label column of the inputs (read past, not written) [default: `label`]
    #[arg(long)]
    pub label_column: Option<String>,
}

impl AugmentArgs {
    pub fn into_request(self) -> AugmentRequest {
        AugmentRequest {
            inputs: self.inputs,
            out: self.out,
            columns: Columns {
                text: self.text_column,
                text_pair: self.text_pair_column,
                label: self.label_column,
            },
            augmentation: Augmentation {
                variants: self.variants,
                mask_prob: self.mask_prob,
                shuffle_prob: self.shuffle_prob,
                shuffle_window: self.shuffle_window,
                ngram_prob: self.ngram_prob,
                ngram_max: self.ngram_max,
            },
            seed: self.seed,
            skip_short: self.skip_short,
        }
    }
}
