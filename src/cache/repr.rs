//! The teacher's sentence representations, `representations.bin`, written beside `logits.bin`
//! by `kd teach --cache-representations` (and kept in step by `kd cache`): one row per row of
//! the logit cache, in the same order, each the first token's last hidden state (see
//! [`crate::model::TextClassifier::forward_with_representation`]). A student of any family,
//! tokenizer or width learns from rows, never tokens, so it reads these as it reads logits.
//!
//! Stored as bf16: half the bytes of f32, f32's range (a hidden state never overflows it, as
//! it could f16's), and its 8-bit mantissa is far finer than a cosine or MSE match needs.
//!
//! Header layout (little-endian), format version 1, then rows × width bf16 values, row-major:
//! | bytes    | field                                          |
//! |----------|------------------------------------------------|
//! | 0..8     | magic `KDREPR\0\0`                             |
//! | 8..12    | format version (1)                             |
//! | 12..16   | dtype code (2 = bf16)                          |
//! | 16..24   | rows                                           |
//! | 24..28   | width (the teacher's hidden size)              |
//! | 28..32   | CRC-32 of every byte after 256                 |
//! | 32..48   | fingerprint of the labelled rows               |
//! | 48..64   | fingerprint of the unlabelled rows             |
//! | 64..72   | labelled rows (the first ones)                 |
//! | 72..76   | length of the run id in bytes                  |
//! | 76..108  | run id of the teacher run, zero padded         |
//! | 108..112 | length of the teacher id in bytes              |
//! | 112..256 | teacher id (run folder and base model), UTF-8  |
use super::file::{fingerprint_hex, CacheHeader, LogitCache, HEADER_LEN};
use crate::error::{KdError, Result};
use crate::fsutil::write_atomic;
use half::bf16;
use memmap2::Mmap;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"KDREPR\0\0";
const VERSION: u32 = 1;
const DTYPE_BF16: u32 = 2;
const RUN_ID: usize = 76;
const MAX_RUN_ID_LEN: usize = 32;
const ID_START: usize = 112;

/// What to do about a representation cache that cannot be used.
const RECACHE: &str = "rerun kd teach with --cache-representations";

/// What the header says: which rows, scored by which teacher run, how wide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReprHeader {
    pub rows: usize,
    pub width: usize,
    pub labelled: usize,
    pub fingerprint: u128,
    pub unlabelled_fingerprint: u128,
    pub run_id: String,
    pub teacher: String,
}

impl ReprHeader {
    /// The header of the representations of the rows `logits` describes, `width` wide.
    pub fn of(logits: &CacheHeader, width: usize) -> Self {
        Self {
            rows: logits.rows,
            width,
            labelled: logits.labelled,
            fingerprint: logits.fingerprint,
            unlabelled_fingerprint: logits.unlabelled_fingerprint,
            run_id: logits.run_id.clone().unwrap_or_default(),
            teacher: logits.teacher.clone(),
        }
    }
}

/// Writes `values` (rows × width f32, row-major) as bf16 to `path`, atomically. A non-finite
/// value is refused by row: a student would learn NaN from it.
pub fn write(path: &Path, header: &ReprHeader, values: &[f32]) -> Result<()> {
    let (rows, width) = (header.rows, header.width);
    if values.len() != rows * width || width == 0 {
        return Err(KdError::Internal(format!(
            "{}: {} values for {rows} rows × width {width}",
            path.display(),
            values.len()
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(KdError::bad_file(
            path,
            format!(
                "the teacher's representation of row {} is not finite: the teacher diverged",
                i / width + 1
            ),
        ));
    }
    let data: Vec<u8> = values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect();
    let head = encode_header(header, crc32fast::hash(&data));
    write_atomic(path, |tmp| {
        let mut file = std::fs::File::create(tmp).map_err(|e| KdError::io(tmp, e))?;
        let io = |e| KdError::io(tmp, e);
        file.write_all(&head).map_err(io)?;
        file.write_all(&data).map_err(io)
    })
}

fn encode_header(h: &ReprHeader, crc: u32) -> [u8; HEADER_LEN] {
    let mut head = [0u8; HEADER_LEN];
    let run_id = truncate_utf8(&h.run_id, MAX_RUN_ID_LEN);
    let teacher = truncate_utf8(&h.teacher, HEADER_LEN - ID_START);
    head[0..8].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&VERSION.to_le_bytes());
    head[12..16].copy_from_slice(&DTYPE_BF16.to_le_bytes());
    head[16..24].copy_from_slice(&(h.rows as u64).to_le_bytes());
    head[24..28].copy_from_slice(&(h.width as u32).to_le_bytes());
    head[28..32].copy_from_slice(&crc.to_le_bytes());
    head[32..48].copy_from_slice(&h.fingerprint.to_le_bytes());
    head[48..64].copy_from_slice(&h.unlabelled_fingerprint.to_le_bytes());
    head[64..72].copy_from_slice(&(h.labelled as u64).to_le_bytes());
    head[72..76].copy_from_slice(&(run_id.len() as u32).to_le_bytes());
    head[RUN_ID..RUN_ID + run_id.len()].copy_from_slice(run_id.as_bytes());
    head[108..112].copy_from_slice(&(teacher.len() as u32).to_le_bytes());
    head[ID_START..ID_START + teacher.len()].copy_from_slice(teacher.as_bytes());
    head
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads and checks a header (magic, version, dtype); returns it with the data's checksum.
fn parse_header(bytes: &[u8], path: &Path) -> Result<(ReprHeader, u32)> {
    let bad = |m: String| KdError::bad_file(path, m);
    if bytes.len() < HEADER_LEN || &bytes[0..8] != MAGIC {
        return Err(bad(format!(
            "not a kd representation cache (bad magic): {RECACHE}"
        )));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let u128_at = |o: usize| u128::from_le_bytes(bytes[o..o + 16].try_into().expect("16 bytes"));
    if u32_at(8) != VERSION {
        return Err(bad(format!(
            "representation cache format version {}, this kd reads version {VERSION}",
            u32_at(8)
        )));
    }
    if u32_at(12) != DTYPE_BF16 {
        return Err(bad(format!("unknown dtype code {}", u32_at(12))));
    }
    let text = |start: usize, len: usize, max: usize| {
        String::from_utf8_lossy(&bytes[start..start + len.min(max)]).into_owned()
    };
    let header = ReprHeader {
        rows: u64_at(16) as usize,
        width: u32_at(24) as usize,
        fingerprint: u128_at(32),
        unlabelled_fingerprint: u128_at(48),
        labelled: u64_at(64) as usize,
        run_id: text(RUN_ID, u32_at(72) as usize, MAX_RUN_ID_LEN),
        teacher: text(ID_START, u32_at(108) as usize, HEADER_LEN - ID_START),
    };
    Ok((header, u32_at(28)))
}

/// The header of the representation cache at `path` (reads 256 bytes; the data is not checked).
pub fn read_header(path: &Path) -> Result<ReprHeader> {
    Ok(read_head(path)?.0)
}

/// The CRC-32 the header at `path` records for its data: with the run id, what identifies the
/// representations a student learned from.
pub fn read_checksum(path: &Path) -> Result<u32> {
    Ok(read_head(path)?.1)
}

fn read_head(path: &Path) -> Result<(ReprHeader, u32)> {
    parse_header(&crate::fsutil::read_prefix(path, HEADER_LEN)?, path)
}

/// A memory-mapped, validated representation cache.
#[derive(Debug)]
pub struct ReprCache {
    map: Mmap,
    header: ReprHeader,
    path: PathBuf,
}

impl ReprCache {
    /// Maps `path` and checks magic, version, dtype, size (a partial file is refused) and the
    /// checksum.
    pub fn open(path: &Path) -> Result<Self> {
        let map = crate::fsutil::map_readonly(path)?;
        let (header, want) = parse_header(&map, path)?;
        let (rows, width) = (header.rows, header.width);
        let expected = rows
            .checked_mul(width)
            .and_then(|n| n.checked_mul(2))
            .and_then(|n| n.checked_add(HEADER_LEN));
        if expected != Some(map.len()) || width == 0 {
            return Err(KdError::bad_file(path, format!(
                "size {} bytes does not match {rows} rows × width {width} (truncated or corrupt): {RECACHE}",
                map.len()
            )));
        }
        let got = crc32fast::hash(&map[HEADER_LEN..]);
        if got != want {
            return Err(KdError::bad_file(path, format!(
                "the representations do not match their checksum (CRC-32 {got:08x}, header says {want:08x}): the file was damaged after kd wrote it; {RECACHE}"
            )));
        }
        Ok(Self {
            map,
            header,
            path: path.to_path_buf(),
        })
    }

    pub fn header(&self) -> &ReprHeader {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The representations of `rows`, concatenated in f32 (rows.len() × width).
    pub fn gather(&self, rows: &[usize]) -> Vec<f32> {
        let w = self.header.width;
        let mut out = Vec::with_capacity(rows.len() * w);
        for &i in rows {
            let start = HEADER_LEN + i * w * 2;
            out.extend(
                self.map[start..start + w * 2]
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            );
        }
        out
    }

    /// Refuses representations of another teacher run or of other rows than `logits` holds
    /// (the student's rows are checked against the logits), naming both runs and fingerprints.
    pub fn check_matches(&self, logits: &LogitCache) -> Result<()> {
        let (h, l) = (&self.header, logits.header());
        let logits_run = l.run_id.as_deref().unwrap_or("(none)");
        let same_rows = (h.rows, h.labelled, h.fingerprint, h.unlabelled_fingerprint)
            == (l.rows, l.labelled, l.fingerprint, l.unlabelled_fingerprint);
        if h.run_id == logits_run && same_rows {
            return Ok(());
        }
        let rows = |n: usize, f: u128, u: u128| {
            format!(
                "{n} rows, fingerprints {} / {}",
                fingerprint_hex(f),
                fingerprint_hex(u)
            )
        };
        Err(KdError::bad_file(
            &self.path,
            format!(
                "comes from another teacher or other rows (teacher run {}, {}) than {} (teacher run {logits_run}, {}): {RECACHE}",
                if h.run_id.is_empty() { "(none)" } else { &h.run_id },
                rows(h.rows, h.fingerprint, h.unlabelled_fingerprint),
                logits.path().display(),
                rows(l.rows, l.fingerprint, l.unlabelled_fingerprint),
            ),
        ))
    }

    /// Refuses representations of another width than `expected`, the hidden size of the
    /// teacher `source` says it has.
    pub fn check_width(&self, expected: usize, source: &Path) -> Result<()> {
        if self.header.width == expected {
            return Ok(());
        }
        Err(KdError::bad_file(
            &self.path,
            format!(
                "holds representations of width {}, but the teacher's hidden size is {expected} ({}): they were not made by this teacher; {RECACHE}",
                self.header.width,
                source.display()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ReprHeader {
        ReprHeader {
            rows: 3,
            width: 4,
            labelled: 2,
            fingerprint: 7,
            unlabelled_fingerprint: 9,
            run_id: "0193ab-77".into(),
            teacher: "teacher (roberta-base)".into(),
        }
    }

    #[test]
    fn round_trip_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("representations.bin");
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        write(&path, &header(), &values).unwrap();
        let cache = ReprCache::open(&path).unwrap();
        assert_eq!(cache.header(), &header());
        assert_eq!(read_header(&path).unwrap(), header());
        // Halves are exact in bf16.
        assert_eq!(
            cache.gather(&[2, 0]),
            [&values[8..12], &values[0..4]].concat()
        );
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.bin");
        std::fs::write(&cut, &bytes[..bytes.len() - 2]).unwrap();
        let err = ReprCache::open(&cut).unwrap_err().to_string();
        assert!(
            err.contains("cut.bin") && err.contains("truncated"),
            "{err}"
        );
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 5] ^= 0x10;
        std::fs::write(&cut, &flipped).unwrap();
        let err = ReprCache::open(&cut).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        let mut nan = values.clone();
        nan[9] = f32::NAN;
        let err = write(&cut, &header(), &nan).unwrap_err().to_string();
        assert!(err.contains("row 3") && err.contains("not finite"), "{err}");
        // A failed write leaves the old file as it was.
        assert!(write(&path, &header(), &values[..4]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let err = cache.check_width(8, Path::new("t/adapter")).unwrap_err();
        assert!(err.to_string().contains("width 4") && err.to_string().contains("is 8"));
    }
}
