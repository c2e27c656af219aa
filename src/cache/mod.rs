//! The teacher's logit cache, `logits.bin`, and everything that fills it: the file format
//! ([`file`]: header, write, read, fingerprints), the checksummed blocks kept to be reused
//! (chunks and parts, each recording what scored it: [`block`]), the caching pass that scores
//! rows into it chunk by chunk and resumes ([`pass`]), its sharing out between processes and
//! the merge of their parts ([`merge`]), and several teachers' caches read as one
//! ([`ensemble`]); beside it, the teacher's sentence representations, `representations.bin`
//! ([`repr`]), which the same pass scores when asked.
//!
//! The pass batches each chunk on its own, so a chunk's logits do not depend on the rows
//! outside it: a resumed pass, a single pass and N merged shards write the same bits.
pub(crate) mod block;
pub(crate) mod ensemble;
pub(crate) mod file;
pub(crate) mod merge;
pub(crate) mod pass;
pub mod repr;

pub use crate::shard::Shard;
pub use block::Made;
pub use ensemble::ensemble;
pub use file::{
    fingerprint, fingerprint_hex, read_checksum, read_header, write, CacheHeader, LogitCache,
    HEADER_LEN,
};
pub use merge::{merge_parts, parts_dir, write_part};
pub use pass::{is_chunk_file, split_rows, Keep, Pass, CACHE_CHUNK_ROWS};
pub use repr::{ReprCache, ReprHeader};
