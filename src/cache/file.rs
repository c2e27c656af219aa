//! The file format of `logits.bin`: a fixed 256-byte header, then row-major little-endian f32
//! logits, one row per training row in file order (the labelled rows, then the unlabelled rows
//! of a transfer set). Read through a memory map, so that distillation touches only the rows
//! of each batch.
//!
//! Header layout (little-endian), format version 2:
//! | bytes   | field                                        |
//! |---------|----------------------------------------------|
//! | 0..8    | magic `KDLOGIT\0`                            |
//! | 8..12   | format version (2)                           |
//! | 12..16  | dtype code (0 = f32)                         |
//! | 16..24  | rows                                         |
//! | 24..28  | classes                                      |
//! | 28..32  | length of the teacher id in bytes            |
//! | 32..48  | fingerprint of the labelled rows (FNV-1a 128)|
//! | 48..52  | CRC-32 of the logits (every byte after 256)  |
//! | 52..56  | length of the run id in bytes                |
//! | 56..88  | run id of the teacher run, zero padded       |
//! | 88..96  | labelled rows (the first ones)               |
//! | 96..112 | fingerprint of the unlabelled rows           |
//! | 112..256| teacher id, UTF-8, zero padded               |
//!
//! Version 1 (no checksum, no run id, teacher id at 48..256) is still read.
use crate::data::Example;
use crate::error::{KdError, Result};
use crate::fsutil::write_atomic;
use memmap2::Mmap;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"KDLOGIT\0";
const VERSION: u32 = 2;
const DTYPE_F32: u32 = 0;
/// Size of the fixed header; also keeps the f32 data aligned.
pub const HEADER_LEN: usize = 256;
const ID_START: usize = 112;
const MAX_ID_LEN: usize = HEADER_LEN - ID_START;
const MAX_RUN_ID_LEN: usize = 32;

/// What the header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheHeader {
    /// Every row: the labelled ones, then the unlabelled ones.
    pub rows: usize,
    pub classes: usize,
    /// Fingerprint of the labelled rows' texts and labels, in file order.
    pub fingerprint: u128,
    /// How many of the rows are labelled.
    pub labelled: usize,
    /// Fingerprint of the unlabelled rows' texts, in order.
    pub unlabelled_fingerprint: u128,
    /// The teacher's identity (its run folder and base model).
    pub teacher: String,
    /// The run that wrote the cache (None in version-1 caches).
    pub run_id: Option<String>,
}

impl CacheHeader {
    /// The header of a cache of `labelled` then `unlabelled` rows, each scored into `classes`
    /// logits by `teacher` (its run folder and base model) in run `run_id`. Every cache kd
    /// writes is described by this constructor, so the fingerprints are taken one way.
    pub fn new(
        labelled: &[Example],
        unlabelled: &[Example],
        classes: usize,
        teacher: String,
        run_id: &str,
    ) -> Self {
        Self {
            rows: labelled.len() + unlabelled.len(),
            classes,
            fingerprint: fingerprint(labelled),
            labelled: labelled.len(),
            unlabelled_fingerprint: fingerprint(unlabelled),
            teacher,
            run_id: Some(run_id.to_string()),
        }
    }
}

/// FNV-1a (128-bit) over every row's label and length-prefixed text (and pair text), in order.
pub fn fingerprint(rows: &[Example]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u128;
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(&(rows.len() as u64).to_le_bytes());
    for r in rows {
        eat(&r.label.map_or(u32::MAX, |l| l).to_le_bytes());
        eat(&(r.text.len() as u64).to_le_bytes());
        eat(r.text.as_bytes());
        // A pair's second text (absent from single-text rows, whose fingerprint is unchanged).
        if let Some(p) = &r.pair {
            eat(&(p.len() as u64 | 1 << 63).to_le_bytes());
            eat(p.as_bytes());
        }
    }
    h
}

/// Hex form of a fingerprint, as shown to users.
pub fn fingerprint_hex(f: u128) -> String {
    format!("{f:032x}")
}

/// Writes `logits` (rows × classes, row-major) to `path` atomically.
pub fn write(path: &Path, header: &CacheHeader, logits: &[f32]) -> Result<()> {
    if logits.len() != header.rows * header.classes {
        return Err(KdError::Internal(format!(
            "logit cache: {} values for {} rows × {} classes",
            logits.len(),
            header.rows,
            header.classes
        )));
    }
    let mut head = [0u8; HEADER_LEN];
    let id = truncate_utf8(&header.teacher, MAX_ID_LEN);
    let run_id = truncate_utf8(header.run_id.as_deref().unwrap_or(""), MAX_RUN_ID_LEN);
    let data: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    head[0..8].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&VERSION.to_le_bytes());
    head[12..16].copy_from_slice(&DTYPE_F32.to_le_bytes());
    head[16..24].copy_from_slice(&(header.rows as u64).to_le_bytes());
    head[24..28].copy_from_slice(&(header.classes as u32).to_le_bytes());
    head[28..32].copy_from_slice(&(id.len() as u32).to_le_bytes());
    head[32..48].copy_from_slice(&header.fingerprint.to_le_bytes());
    head[48..52].copy_from_slice(&crc32fast::hash(&data).to_le_bytes());
    head[52..56].copy_from_slice(&(run_id.len() as u32).to_le_bytes());
    head[56..56 + run_id.len()].copy_from_slice(run_id.as_bytes());
    head[88..96].copy_from_slice(&(header.labelled as u64).to_le_bytes());
    head[96..112].copy_from_slice(&header.unlabelled_fingerprint.to_le_bytes());
    head[ID_START..ID_START + id.len()].copy_from_slice(id.as_bytes());
    write_atomic(path, |tmp| {
        let mut file = std::fs::File::create(tmp).map_err(|e| KdError::io(tmp, e))?;
        let io = |e| KdError::io(tmp, e);
        file.write_all(&head).map_err(io)?;
        file.write_all(&data).map_err(io)
    })
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads and checks a header (magic, version, dtype); returns it with the data's checksum
/// (None in version-1 caches).
fn parse_header(bytes: &[u8], path: &Path) -> Result<(CacheHeader, Option<u32>)> {
    let bad = |m: String| KdError::bad_file(path, m);
    if bytes.len() < HEADER_LEN || &bytes[0..8] != MAGIC {
        return Err(bad("not a kd logit cache (bad magic)".into()));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != VERSION && version != 1 {
        return Err(bad(format!(
            "logit cache format version {version}, this kd reads version {VERSION}"
        )));
    }
    if u32_at(12) != DTYPE_F32 {
        return Err(bad(format!("unknown dtype code {}", u32_at(12))));
    }
    let rows = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
    let classes = u32_at(24) as usize;
    let fingerprint = u128::from_le_bytes(bytes[32..48].try_into().expect("16 bytes"));
    let text = |start: usize, len: usize| {
        String::from_utf8_lossy(&bytes[start..start + len.min(HEADER_LEN - start)]).into_owned()
    };
    let header = match version {
        1 => CacheHeader {
            rows,
            classes,
            fingerprint,
            labelled: rows,
            unlabelled_fingerprint: self::fingerprint(&[]),
            teacher: text(48, u32_at(28) as usize),
            run_id: None,
        },
        _ => CacheHeader {
            rows,
            classes,
            fingerprint,
            labelled: u64::from_le_bytes(bytes[88..96].try_into().expect("8 bytes")) as usize,
            unlabelled_fingerprint: u128::from_le_bytes(
                bytes[96..112].try_into().expect("16 bytes"),
            ),
            teacher: text(ID_START, u32_at(28) as usize),
            run_id: Some(text(56, (u32_at(52) as usize).min(MAX_RUN_ID_LEN)))
                .filter(|s| !s.is_empty()),
        },
    };
    if header.labelled > rows {
        return Err(bad(format!(
            "{} labelled rows of {rows} (corrupt header)",
            header.labelled
        )));
    }
    Ok((header, (version > 1).then(|| u32_at(48))))
}

/// The header of the cache at `path` (reads 256 bytes; the data is not checked).
pub fn read_header(path: &Path) -> Result<CacheHeader> {
    Ok(read_head(path)?.0)
}

/// The CRC-32 the header of the cache at `path` records for its logits (None in version-1
/// caches): with the run id, what identifies the logits a student learned from.
pub fn read_checksum(path: &Path) -> Result<Option<u32>> {
    Ok(read_head(path)?.1)
}

fn read_head(path: &Path) -> Result<(CacheHeader, Option<u32>)> {
    parse_header(&crate::fsutil::read_prefix(path, HEADER_LEN)?, path)
}

/// A memory-mapped, validated logit cache.
#[derive(Debug)]
pub struct LogitCache {
    map: Mmap,
    header: CacheHeader,
    path: PathBuf,
}

impl LogitCache {
    /// Maps `path` and validates magic, version, dtype, size and that every logit is finite.
    pub fn open(path: &Path) -> Result<Self> {
        let map = crate::fsutil::map_readonly(path)?;
        let bad = |m: String| KdError::bad_file(path, m);
        let (header, checksum) = parse_header(&map, path)?;
        let (rows, classes) = (header.rows, header.classes);
        let expected = rows
            .checked_mul(classes)
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(HEADER_LEN));
        if expected != Some(map.len()) || classes == 0 {
            return Err(bad(format!(
                "size {} bytes does not match {rows} rows × {classes} classes (truncated or corrupt)",
                map.len()
            )));
        }
        if let Some(want) = checksum {
            let got = crc32fast::hash(&map[HEADER_LEN..]);
            if got != want {
                return Err(bad(format!(
                    "the logits do not match their checksum (CRC-32 {got:08x}, header says {want:08x}): the file was damaged after kd wrote it; re-run kd teach"
                )));
            }
        }
        // A diverged teacher would poison every distillation step: refuse it here, by row.
        let first_bad = map[HEADER_LEN..]
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes(b.try_into().expect("4 bytes")).is_finite());
        if let Some(i) = first_bad {
            return Err(bad(format!(
                "row {} holds a non-finite logit (the teacher diverged): re-run kd teach",
                i / classes + 1
            )));
        }
        Ok(Self {
            map,
            header,
            path: path.to_path_buf(),
        })
    }

    /// The header.
    pub fn header(&self) -> &CacheHeader {
        &self.header
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logits of row `i`.
    pub fn row(&self, i: usize) -> Vec<f32> {
        let c = self.header.classes;
        let start = HEADER_LEN + i * c * 4;
        self.map[start..start + c * 4]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect()
    }

    /// Logits of `rows`, concatenated (rows.len() × classes).
    pub fn gather(&self, rows: &[usize]) -> Vec<f32> {
        rows.iter().flat_map(|&i| self.row(i)).collect()
    }

    /// The labelled rows' logits, then `unlabelled`: this cache's logits with its unlabelled
    /// rows replaced by newly scored ones.
    pub fn with_unlabelled(&self, unlabelled: Vec<f32>) -> Vec<f32> {
        let mut all = self.gather(&(0..self.header.labelled).collect::<Vec<_>>());
        all.extend(unlabelled);
        all
    }

    /// Refuses a cache made from other rows: the labelled rows must be those the teacher scored
    /// (naming both fingerprints), and unlabelled rows, when given, those it scored too (naming
    /// the files). A student may leave out the unlabelled rows a teacher scored.
    pub fn check_matches(
        &self,
        labelled: &[Example],
        unlabelled: &[Example],
        unlabelled_files: &[PathBuf],
    ) -> Result<()> {
        let h = &self.header;
        let current = fingerprint(labelled);
        if h.labelled != labelled.len() || h.fingerprint != current {
            return Err(KdError::FingerprintMismatch {
                path: self.path.clone(),
                cached: format!("{} ({} rows)", fingerprint_hex(h.fingerprint), h.labelled),
                current: format!("{} ({} rows)", fingerprint_hex(current), labelled.len()),
            });
        }
        if unlabelled.is_empty() {
            return Ok(());
        }
        let files: Vec<String> = unlabelled_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let scored = h.rows - h.labelled;
        if scored == 0 {
            return Err(KdError::bad_file(
                &self.path,
                format!(
                    "the teacher scored no unlabelled rows, but --unlabelled {} was given: score them with `kd teach --unlabelled` (or leave them out)",
                    files.join(" ")
                ),
            ));
        }
        let current = fingerprint(unlabelled);
        if scored != unlabelled.len() || h.unlabelled_fingerprint != current {
            return Err(KdError::bad_file(
                &self.path,
                format!(
                    "the unlabelled rows of {} ({} rows, fingerprint {}) are not those the teacher scored ({scored} rows, fingerprint {}): pass the same files, in the same order",
                    files.join(", "),
                    unlabelled.len(),
                    fingerprint_hex(current),
                    fingerprint_hex(h.unlabelled_fingerprint)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                text: format!("row {i}"),
                label: Some((i % 3) as u32),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn round_trip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logits.bin");
        let data = rows(5);
        let logits: Vec<f32> = (0..15).map(|i| i as f32 * 0.25 - 1.0).collect();
        let header = CacheHeader {
            rows: 5,
            classes: 3,
            fingerprint: fingerprint(&data),
            labelled: 5,
            unlabelled_fingerprint: fingerprint(&[]),
            teacher: "teacher (roberta-base)".into(),
            run_id: Some("0193ab-77".into()),
        };
        write(&path, &header, &logits).unwrap();
        let cache = LogitCache::open(&path).unwrap();
        assert_eq!(cache.header(), &header);
        assert_eq!(cache.gather(&[0, 1, 2, 3, 4]), logits);
        assert_eq!(cache.row(4), &logits[12..15]);
        cache.check_matches(&data, &[], &[]).unwrap();
        let mut other = data.clone();
        other[2].label = Some(0);
        let err = cache
            .check_matches(&other, &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&fingerprint_hex(fingerprint(&data))), "{err}");
        // A truncated file is refused, and a failed write leaves the old cache intact.
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.bin");
        std::fs::write(&cut, &bytes[..bytes.len() - 4]).unwrap();
        assert!(LogitCache::open(&cut)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        // So is a flipped byte, by its checksum.
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 9] ^= 0x10;
        std::fs::write(&cut, &flipped).unwrap();
        let err = LogitCache::open(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.bin") && err.contains("checksum"), "{err}");
        // And a NaN logit, by row (written with a valid checksum).
        let mut nan = logits.clone();
        nan[7] = f32::NAN;
        write(&cut, &header, &nan).unwrap();
        let err = LogitCache::open(&cut).unwrap_err().to_string();
        assert!(err.contains("row 3") && err.contains("non-finite"), "{err}");
        assert!(write(&path, &header, &logits[..3]).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
