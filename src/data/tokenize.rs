//! Tokenizing with the model's own tokenizer, truncated to `--max-len`, never padded (batches
//! are padded to their own longest row).
use super::{Batcher, Example};
use crate::error::{KdError, Result};
use std::path::PathBuf;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

/// The tokenizer files a checkpoint ships.
#[derive(Clone, Debug)]
pub enum TokenizerFiles {
    /// A `tokenizers` JSON file.
    Json(PathBuf),
    /// A byte-level BPE vocabulary and merges (RoBERTa's original files).
    VocabMerges { vocab: PathBuf, merges: PathBuf },
}

impl TokenizerFiles {
    /// Finds the tokenizer files in `dir`.
    pub fn find(dir: &std::path::Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Ok(TokenizerFiles::Json(json));
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Ok(TokenizerFiles::VocabMerges { vocab, merges });
        }
        Err(KdError::NotFound(format!(
            "{}: no tokenizer.json and no vocab.json + merges.txt",
            dir.display()
        )))
    }
}

/// Token ids per row, and where each pair's second segment starts.
pub type Encoded = (Vec<Vec<u32>>, Vec<Option<usize>>);

/// The model's tokenizer with kd's truncation and no baked-in padding.
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Loads the tokenizer and replaces its padding/truncation settings (the MiniLM
    /// tokenizer.json files pad every row to 128) with truncation to `max_len` only.
    pub fn load(files: &TokenizerFiles, max_len: usize) -> Result<Self> {
        let mut inner = match files {
            TokenizerFiles::Json(path) => Tokenizer::from_file(path)
                .map_err(|e| KdError::bad_file(path, format!("unreadable tokenizer: {e}")))?,
            TokenizerFiles::VocabMerges { vocab, merges } => byte_level_bpe(vocab, merges)?,
        };
        inner.with_padding(None::<PaddingParams>);
        let special = added_tokens(&inner, false);
        if max_len <= special {
            return Err(KdError::Config(format!(
                "--max-len {max_len} leaves no token of text: the tokenizer adds {special} special tokens to every row (use at least {})",
                special + 1
            )));
        }
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| KdError::Tokenizer(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Number of tokens in the vocabulary (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids (special tokens included) for each row, and where each pair's second segment
    /// starts (its token type 1): single texts, or pairs as transformers tokenizes them.
    pub fn encode_rows(&self, rows: &[Example]) -> Result<Encoded> {
        Ok(self.encode_rows_marked(rows)?.0)
    }

    /// [`Self::encode_rows`], and whether truncation cut each row (`kd serve` refuses a text
    /// that does not fit when the client asks it not to truncate).
    pub fn encode_rows_marked(&self, rows: &[Example]) -> Result<(Encoded, Vec<bool>)> {
        use tokenizers::EncodeInput;
        let (mut ids, mut starts, mut cut) = (
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
            Vec::with_capacity(rows.len()),
        );
        // A few thousand rows at a time: a tokenizers Encoding (tokens, offsets, masks) weighs
        // ~100× its ids, and a million of them at once took 9 GB.
        let max_len = self
            .inner
            .get_truncation()
            .map_or(usize::MAX, |t| t.max_length);
        let special = added_tokens(&self.inner, true);
        if rows.iter().any(|r| r.pair.is_some()) && max_len < special + 2 {
            return Err(KdError::Config(format!(
                "--max-len {max_len} leaves no token of one text of a pair: the tokenizer adds {special} special tokens to a pair (use at least {})",
                special + 2
            )));
        }
        for chunk in rows.chunks(ENCODE_CHUNK_ROWS) {
            let inputs: Vec<EncodeInput> = chunk
                .iter()
                .map(|r| match &r.pair {
                    Some(p) => EncodeInput::Dual(r.text.as_str().into(), p.as_str().into()),
                    None => EncodeInput::Single(r.text.as_str().into()),
                })
                .collect();
            let enc = self
                .inner
                .encode_batch(inputs, true)
                .map_err(|e| KdError::Tokenizer(e.to_string()))?;
            for e in enc {
                starts.push(e.get_type_ids().iter().position(|&t| t == 1));
                ids.push(e.get_ids().to_vec());
                // Truncation keeps what it cut as overflowing encodings.
                cut.push(!e.get_overflowing().is_empty());
            }
        }
        Ok(((ids, starts), cut))
    }

    /// The most tokens a row keeps, special tokens included (its truncation length).
    pub fn max_len(&self) -> usize {
        self.inner
            .get_truncation()
            .map_or(usize::MAX, |t| t.max_length)
    }

    /// Token ids (special tokens included) for each text.
    pub fn encode_all(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let mut ids = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(ENCODE_CHUNK_ROWS) {
            let enc = self
                .inner
                .encode_batch(chunk.to_vec(), true)
                .map_err(|e| KdError::Tokenizer(e.to_string()))?;
            ids.extend(enc.into_iter().map(|e| e.get_ids().to_vec()));
        }
        Ok(ids)
    }
}

/// The special tokens the tokenizer adds to a single text or a pair ([CLS] … [SEP]).
fn added_tokens(tok: &Tokenizer, pair: bool) -> usize {
    use tokenizers::PostProcessor;
    tok.get_post_processor().map_or(0, |p| p.added_tokens(pair))
}

/// Rows per tokenizer call (each call runs in parallel over its rows).
const ENCODE_CHUNK_ROWS: usize = 4096;

fn byte_level_bpe(vocab: &std::path::Path, merges: &std::path::Path) -> Result<Tokenizer> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::roberta::RobertaProcessing;
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| KdError::bad_file(vocab, format!("BPE vocabulary: {e}")))?;
    let token_id = |t: &str| {
        bpe_vocab_id(&bpe, t).ok_or_else(|| KdError::bad_file(vocab, format!("no `{t}` token")))
    };
    let (cls, sep) = (token_id("<s>")?, token_id("</s>")?);
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(
        RobertaProcessing::new(("</s>".into(), sep), ("<s>".into(), cls))
            .trim_offsets(true)
            .add_prefix_space(false),
    ));
    Ok(tok)
}

fn bpe_vocab_id(bpe: &tokenizers::models::bpe::BPE, token: &str) -> Option<u32> {
    use tokenizers::Model;
    bpe.token_to_id(token)
}

/// Tokenizes rows into a batcher with the checkpoint's pad id.
pub fn tokenize_rows(tokenizer: &TextTokenizer, rows: &[Example], pad_id: u32) -> Result<Batcher> {
    let (ids, segments) = tokenizer.encode_rows(rows)?;
    Ok(Batcher::new(ids, rows.iter().map(|r| r.label).collect(), pad_id).with_segments(segments))
}
