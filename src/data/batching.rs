//! Batches padded only to their own longest row, with rows of similar length grouped together
//! so that little compute is spent on padding.
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// One padded batch, kept on the host (the model moves it to its device).
#[derive(Clone, Debug)]
pub struct Batch {
    /// Row-major (batch_size × seq_len) token ids.
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    pub batch_size: usize,
    pub seq_len: usize,
    /// One label per row; 0 stands in for an unlabelled row (see `labelled`).
    pub labels: Vec<u32>,
    /// Whether each row has a label (unlabelled rows are a distillation transfer set).
    pub labelled: Vec<bool>,
    /// Row-major token type ids, when a row of the batch is a sentence pair (else all 0).
    pub token_types: Option<Vec<u32>>,
    /// Which dataset rows these are.
    pub rows: Vec<usize>,
}

impl Batch {
    /// Whether every row has a label.
    pub fn all_labelled(&self) -> bool {
        self.labelled.iter().all(|&l| l)
    }

    /// Real (non-padding) tokens in the batch.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m == 1).count()
    }
}

/// Tokenized rows ready to be cut into batches.
pub struct Batcher {
    ids: Vec<Vec<u32>>,
    labels: Vec<Option<u32>>,
    pad_id: u32,
    /// Per row, where a pair's second segment starts.
    segments: Vec<Option<usize>>,
}

/// How many batches' worth of rows are sorted by length together: large enough to bucket well,
/// small enough that every epoch still mixes the data.
const BUCKET_BATCHES: usize = 50;

impl Batcher {
    /// Wraps tokenized rows (`ids[i]` is row i) and their labels.
    pub fn new(ids: Vec<Vec<u32>>, labels: Vec<Option<u32>>, pad_id: u32) -> Self {
        assert_eq!(ids.len(), labels.len());
        let segments = vec![None; ids.len()];
        Self {
            ids,
            labels,
            pad_id,
            segments,
        }
    }

    /// Marks where each row's second segment starts (sentence pairs).
    pub fn with_segments(mut self, segments: Vec<Option<usize>>) -> Self {
        assert_eq!(segments.len(), self.ids.len());
        self.segments = segments;
        self
    }

    /// A training epoch's plan: shuffle, sort by length within buckets of
    /// `BUCKET_BATCHES` batches, cut, and shuffle the batch order.
    pub fn training_plan(
        &self,
        rows: &[usize],
        batch_size: usize,
        rng: &mut StdRng,
    ) -> Vec<Vec<usize>> {
        let mut rows = rows.to_vec();
        rows.shuffle(rng);
        let mut plan = Vec::new();
        for bucket in rows.chunks_mut(batch_size * BUCKET_BATCHES) {
            bucket.sort_by_key(|&i| self.ids[i].len());
            plan.extend(bucket.chunks(batch_size).map(<[usize]>::to_vec));
        }
        plan.shuffle(rng);
        plan
    }

    /// An evaluation plan: all rows sorted by length (outputs are placed by row index, so the
    /// order does not matter to the caller).
    pub fn eval_plan(&self, rows: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
        let mut rows = rows.to_vec();
        rows.sort_by_key(|&i| (self.ids[i].len(), i));
        rows.chunks(batch_size).map(<[usize]>::to_vec).collect()
    }

    /// The longest of `rows`, in tokens.
    pub fn longest(&self, rows: &[usize]) -> usize {
        rows.iter().map(|&i| self.ids[i].len()).max().unwrap_or(0)
    }

    /// The real (non-padding) tokens of `rows`.
    pub fn tokens(&self, rows: &[usize]) -> usize {
        rows.iter().map(|&i| self.ids[i].len()).sum()
    }

    /// Pads `rows` to their longest row with the pad id.
    pub fn batch(&self, rows: &[usize]) -> Batch {
        self.batch_padded(rows, self.longest(rows))
    }

    /// Pads `rows` to `seq_len` tokens (at least their longest): a data-parallel rank pads its
    /// share of a batch as the whole batch is padded, so each row is computed as it would be in
    /// the whole batch.
    pub fn batch_padded(&self, rows: &[usize], seq_len: usize) -> Batch {
        let seq_len = seq_len.max(self.longest(rows));
        let mut input_ids = Vec::with_capacity(rows.len() * seq_len);
        let mut attention_mask = Vec::with_capacity(rows.len() * seq_len);
        for &i in rows {
            let ids = &self.ids[i];
            input_ids.extend_from_slice(ids);
            input_ids.extend(std::iter::repeat_n(self.pad_id, seq_len - ids.len()));
            attention_mask.extend(std::iter::repeat_n(1, ids.len()));
            attention_mask.extend(std::iter::repeat_n(0, seq_len - ids.len()));
        }
        Batch {
            input_ids,
            attention_mask,
            batch_size: rows.len(),
            seq_len,
            labels: rows.iter().map(|&i| self.labels[i].unwrap_or(0)).collect(),
            labelled: rows.iter().map(|&i| self.labels[i].is_some()).collect(),
            token_types: rows.iter().any(|&i| self.segments[i].is_some()).then(|| {
                rows.iter()
                    .flat_map(|&i| {
                        let start = self.segments[i].unwrap_or(seq_len);
                        let len = self.ids[i].len();
                        (0..seq_len).map(move |p| u32::from(p >= start && p < len))
                    })
                    .collect()
            }),
            rows: rows.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn pads_to_longest_and_covers_every_row_once() {
        let ids: Vec<Vec<u32>> = (0..100).map(|i| vec![7; 1 + i % 13]).collect();
        let b = Batcher::new(ids, vec![Some(0); 100], 1);
        let rows: Vec<usize> = (0..100).collect();
        let plan = b.training_plan(&rows, 8, &mut StdRng::seed_from_u64(0));
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, rows);
        let batch = b.batch(&[0, 5]);
        assert_eq!(batch.seq_len, 6);
        assert_eq!(&batch.input_ids[..6], &[7, 1, 1, 1, 1, 1]);
        assert_eq!(&batch.attention_mask[..6], &[1, 0, 0, 0, 0, 0]);
        assert_eq!(batch.real_tokens(), 7);
    }
}
