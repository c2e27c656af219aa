//! Augmented transfer sets (Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into
//! Simple Neural Networks", §3.2): new rows made from old ones by word-level edits, for the
//! teacher to score like any unlabelled row. What the teacher says about a damaged sentence is
//! what the student learns from, so the variants need not be grammatical, only near the data.
//!
//! Words are the whitespace-split words of a text (what Tang et al. edited), joined back with
//! one space. Each word draws one number X from U[0, 1): X < p_mask masks it, p_mask ≤ X <
//! p_mask + p_shuffle swaps it with a word at most `shuffle_window` places away. Then, with
//! probability p_ng, the variant is cut to a random n-gram, n uniform in 1..=`ngram_max`.
//!
//! Tang et al.'s second operation, POS-guided replacement (a word swapped for another of the same
//! part of speech), needs a tagger kd does not have; local shuffles stand in for it: they also
//! keep the row's vocabulary and perturb its structure, with no model and no word list.
//!
//! Everything here is a pure function of its inputs and an explicit RNG; [`row_rng`] gives each
//! row its own generator from (seed, file, row), so a row's variants depend on nothing else in
//! the input: same inputs and seed, same variants.
use super::Example;
use crate::error::{KdError, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How many draws a row may take per variant asked for before giving up on finding a new one:
/// a short row has few distinct variants (a two-word row has three: either word alone, or both swapped), so asking for more
/// must end.
const DRAWS_PER_VARIANT: usize = 10;

/// The operations and their probabilities. [`Augmentation::tang`] gives Tang et al.'s settings
/// (p_mask = p_pos = 0.1, p_ng = 0.25, n ≤ 5).
#[derive(Clone, Debug, PartialEq)]
pub struct Augmentation {
    /// Variants per row (Tang et al.'s n_iter).
    pub variants: usize,
    /// Probability that a word is masked, that is, left out.
    pub mask_prob: f64,
    /// Probability that a word is swapped with a neighbour (in place of POS-guided replacement).
    pub shuffle_prob: f64,
    /// How far a swapped word may move.
    pub shuffle_window: usize,
    /// Probability that a variant is cut to one of its n-grams.
    pub ngram_prob: f64,
    /// The longest n-gram cut (n is uniform in 1..=ngram_max).
    pub ngram_max: usize,
}

impl Augmentation {
    /// Tang et al.'s probabilities, `variants` variants per row, swaps within 3 words.
    pub fn tang(variants: usize) -> Self {
        Self {
            variants,
            mask_prob: 0.1,
            shuffle_prob: 0.1,
            shuffle_window: 3,
            ngram_prob: 0.25,
            ngram_max: 5,
        }
    }

    /// Refuses settings that cannot make variants, naming the flag: no variants, a
    /// probability outside [0, 1], masking and shuffling that together exceed one draw, a window
    /// or n-gram of 0 words, or every probability 0 (each variant would be its row).
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(KdError::Config(m));
        if self.variants == 0 {
            return bad("--variants 0 makes no rows: ask for at least 1 variant per row".into());
        }
        let probs = [
            ("--mask-prob", self.mask_prob),
            ("--shuffle-prob", self.shuffle_prob),
            ("--ngram-prob", self.ngram_prob),
        ];
        for (flag, p) in probs {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{flag} {p} is not a probability in [0, 1]"));
            }
        }
        if self.mask_prob + self.shuffle_prob > 1.0 {
            return bad(format!(
                "--mask-prob {} + --shuffle-prob {} is over 1: each word draws one of the two",
                self.mask_prob, self.shuffle_prob
            ));
        }
        if self.shuffle_window == 0 || self.ngram_max == 0 {
            return bad("--shuffle-window and --ngram-max must be at least 1 word".into());
        }
        if probs.iter().all(|(_, p)| *p == 0.0) {
            return bad("--mask-prob, --shuffle-prob and --ngram-prob are all 0: every variant would be its row".into());
        }
        Ok(())
    }
}

/// Whether a row has anything to augment: a text (or the pair's second text) of two words or
/// more. One word has no variant: masking it would leave nothing (a text is never emptied),
/// shuffling and n-gram sampling leave it as it is.
pub fn augmentable(row: &Example) -> bool {
    let long = |t: &str| t.split_whitespace().nth(1).is_some();
    long(&row.text) || row.pair.as_deref().is_some_and(long)
}

/// The generator of row `row` of input `file` under `seed`: the three numbers are the
/// generator's key, so no two rows share a stream, and a row's variants do not depend on the
/// rows before it.
pub fn row_rng(seed: u64, file: usize, row: usize) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(file as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(row as u64).to_le_bytes());
    key[24..].copy_from_slice(b"kd-augmt");
    StdRng::from_seed(key)
}

/// Up to `aug.variants` distinct variants of `row`, none equal to the row itself (Tang et al.
/// discard duplicates too), and how many fell short: a short row may have fewer distinct
/// variants than asked for. Labels are not kept: variants are unlabelled transfer rows.
pub fn variants(row: &Example, aug: &Augmentation, rng: &mut impl Rng) -> (Vec<Example>, usize) {
    let original = Example {
        text: normalized(&row.text),
        pair: row.pair.as_deref().map(normalized),
        ..Default::default()
    };
    let mut out: Vec<Example> = Vec::with_capacity(aug.variants);
    for _ in 0..aug.variants * DRAWS_PER_VARIANT {
        if out.len() == aug.variants {
            break;
        }
        let v = Example {
            text: vary(&original.text, aug, rng),
            pair: original.pair.as_deref().map(|p| vary(p, aug, rng)),
            ..Default::default()
        };
        if v != original && !out.contains(&v) {
            out.push(v);
        }
    }
    let short = aug.variants - out.len();
    (out, short)
}

/// The text with its words joined by one space.
fn normalized(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One variant of `text`; a text of fewer than two words comes back as it is (an empty pair
/// text stays empty).
fn vary(text: &str, aug: &Augmentation, rng: &mut impl Rng) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() < 2 {
        return words.join(" ");
    }
    let kept = ngram(mask_and_shuffle(&words, aug, rng), aug, rng);
    kept.join(" ")
}

/// Tang et al.'s per-word pass: each word draws X ~ U[0, 1) once; X < p_mask masks it, the next
/// p_shuffle of the interval swaps it with a word within the window (in word order, so a word
/// can move twice). Masked words are left out, after the swaps.
///
/// Masking leaves a word out instead of writing a mask token, because the teacher and the
/// student may tokenize differently: `[MASK]` is BERT's mask but three ordinary tokens to
/// RoBERTa (whose mask is `<mask>`), and a byte-level BPE has no unknown token at all, so any
/// token string means something different to each model, and the student would learn the
/// teacher's reading of a token it cannot see. A missing word reads the same to every
/// tokenizer. A text is never emptied: when every word draws a mask, one of them (drawn at
/// random) stays.
fn mask_and_shuffle<'a>(words: &[&'a str], aug: &Augmentation, rng: &mut impl Rng) -> Vec<&'a str> {
    let n = words.len();
    let mut slots: Vec<(&str, bool)> = words.iter().map(|w| (*w, false)).collect();
    let mut swaps = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        let x: f64 = rng.random();
        if x < aug.mask_prob {
            slot.1 = true;
        } else if x < aug.mask_prob + aug.shuffle_prob {
            swaps.push(i);
        }
    }
    for i in swaps {
        let lo = i.saturating_sub(aug.shuffle_window);
        let hi = (i + aug.shuffle_window).min(n - 1);
        // A partner in lo..=hi other than i: draw from the window less one place, skip i.
        let mut j = rng.random_range(lo..hi);
        if j >= i {
            j += 1;
        }
        slots.swap(i, j);
    }
    if slots.iter().all(|s| s.1) {
        let keep = rng.random_range(0..n);
        slots[keep].1 = false;
    }
    slots.into_iter().filter(|s| !s.1).map(|s| s.0).collect()
}

/// With probability p_ng, one n-gram of `words` (n uniform in 1..=ngram_max, at most the
/// length; its start uniform), else `words` whole.
fn ngram<'a>(words: Vec<&'a str>, aug: &Augmentation, rng: &mut impl Rng) -> Vec<&'a str> {
    if aug.ngram_prob == 0.0 || rng.random::<f64>() >= aug.ngram_prob {
        return words;
    }
    let n = rng.random_range(1..=aug.ngram_max).min(words.len());
    let start = rng.random_range(0..=words.len() - n);
    words[start..start + n].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(text: &str) -> Example {
        Example {
            text: text.into(),
            label: Some(1),
            ..Default::default()
        }
    }

    fn only(mask: f64, shuffle: f64, ngram: f64) -> Augmentation {
        Augmentation {
            mask_prob: mask,
            shuffle_prob: shuffle,
            ngram_prob: ngram,
            ..Augmentation::tang(8)
        }
    }

    const SENTENCE: &str = "the quick brown fox jumps over the lazy dog today";

    fn words(t: &str) -> Vec<&str> {
        t.split_whitespace().collect()
    }

    #[test]
    fn same_seed_same_variants_other_seed_others() {
        let r = row("stocks  rally as the bank   reports record profit");
        let aug = Augmentation::tang(6);
        let a = variants(&r, &aug, &mut row_rng(7, 0, 3));
        assert_eq!(a, variants(&r, &aug, &mut row_rng(7, 0, 3)));
        assert_eq!(a.0.len(), 6);
        assert!(a.0.iter().all(|v| v.label.is_none() && v.pair.is_none()));
        for mut other in [row_rng(8, 0, 3), row_rng(7, 1, 3), row_rng(7, 0, 4)] {
            assert_ne!(a, variants(&r, &aug, &mut other));
        }
    }

    #[test]
    fn masking_only_leaves_words_out_in_order() {
        let (vs, _) = variants(&row(SENTENCE), &only(0.3, 0.0, 0.0), &mut row_rng(1, 0, 0));
        for v in &vs {
            let w = words(&v.text);
            assert!(w.len() < 10 && !w.is_empty(), "{}", v.text);
            // A subsequence of the sentence: the kept words in their order.
            let mut rest = words(SENTENCE).into_iter();
            assert!(w.iter().all(|x| rest.any(|y| y == *x)), "{}", v.text);
            assert!(!v.text.contains("MASK") && !v.text.contains("<mask>"));
        }
        // Every word masked: one stays, never an empty text.
        let (vs, _) = variants(
            &row("alpha beta gamma"),
            &only(1.0, 0.0, 0.0),
            &mut row_rng(1, 0, 0),
        );
        assert_eq!(vs.len(), 3, "each of the three words alone: {vs:?}");
        assert!(vs.iter().all(|v| words(&v.text).len() == 1));
    }

    #[test]
    fn shuffling_keeps_the_words_and_moves_them_within_the_window() {
        let aug = Augmentation {
            shuffle_window: 2,
            ..only(0.0, 0.5, 0.0)
        };
        let sentence: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
        let (vs, _) = variants(&row(&sentence.join(" ")), &aug, &mut row_rng(2, 0, 0));
        assert_eq!(vs.len(), 8);
        for v in &vs {
            let w = words(&v.text);
            let mut sorted = w.clone();
            sorted.sort_by_key(|x| x[1..].parse::<usize>().unwrap());
            assert_eq!(sorted, sentence, "the same words: {}", v.text);
        }
        // Rare swaps (at most one per word, as it happens under this seed) move words by at
        // most the window, the rest not at all.
        let (vs, _) = variants(
            &row(&sentence.join(" ")),
            &only(0.0, 0.02, 0.0),
            &mut row_rng(3, 0, 0),
        );
        assert!(vs.len() >= 4, "{vs:?}");
        for v in vs {
            let moves: Vec<usize> = words(&v.text)
                .iter()
                .enumerate()
                .map(|(k, x)| k.abs_diff(x[1..].parse::<usize>().unwrap()))
                .filter(|&d| d > 0)
                .collect();
            assert!(moves.len() >= 2, "{}", v.text);
            assert!(moves.iter().all(|&d| d <= 3), "{}", v.text);
        }
    }

    #[test]
    fn ngram_sampling_cuts_a_contiguous_span_of_at_most_n_words() {
        let aug = Augmentation {
            ngram_max: 3,
            ..only(0.0, 0.0, 1.0)
        };
        let (vs, _) = variants(&row(SENTENCE), &aug, &mut row_rng(4, 0, 0));
        assert!(!vs.is_empty());
        for v in vs {
            assert!((1..=3).contains(&words(&v.text).len()), "{}", v.text);
            assert!(SENTENCE.contains(&v.text), "{}", v.text);
        }
    }

    #[test]
    fn pairs_vary_both_texts_and_short_rows_run_out_of_variants() {
        let pair = Example {
            text: "a man plays the guitar on stage".into(),
            pair: Some("someone is making music".into()),
            ..Default::default()
        };
        let (vs, _) = variants(&pair, &Augmentation::tang(20), &mut row_rng(5, 0, 0));
        assert!(vs.iter().any(|v| v.text != pair.text));
        assert!(vs.iter().any(|v| v.pair != pair.pair));
        assert!(vs
            .iter()
            .all(|v| v.pair.as_deref().is_some_and(|p| !p.is_empty())));
        // Two words: "a" "b" "b a" are the only variants (masking, swapping, 1-grams).
        let (vs, short) = variants(&row("a b"), &Augmentation::tang(5), &mut row_rng(6, 0, 0));
        assert_eq!((vs.len(), short), (3, 2), "{vs:?}");
        assert!(vs.iter().all(|v| v.text != "a b"));
    }

    #[test]
    fn one_word_rows_and_bad_settings_are_named() {
        assert!(!augmentable(&row("  word ")) && augmentable(&row("two words")));
        let one_and_pair = Example {
            text: "yes".into(),
            pair: Some("it is".into()),
            ..Default::default()
        };
        assert!(augmentable(&one_and_pair));
        let both_one = Example {
            pair: Some("no".into()),
            ..one_and_pair
        };
        assert!(!augmentable(&both_one));
        assert!(Augmentation::tang(1).check().is_ok());
        assert!(only(1.0, 0.0, 0.0).check().is_ok());
        let err = |a: Augmentation| a.check().unwrap_err().to_string();
        assert!(err(Augmentation::tang(0)).contains("--variants 0"));
        assert!(err(only(1.5, 0.0, 0.0)).contains("--mask-prob 1.5"));
        assert!(err(only(0.1, -0.1, 0.0)).contains("--shuffle-prob -0.1"));
        assert!(err(only(0.1, 0.0, f64::NAN)).contains("--ngram-prob NaN"));
        assert!(err(only(0.6, 0.6, 0.0)).contains("over 1"));
        assert!(err(only(0.0, 0.0, 0.0)).contains("all 0"));
        let window = Augmentation {
            shuffle_window: 0,
            ..Augmentation::tang(1)
        };
        assert!(err(window).contains("--shuffle-window"));
    }
}
