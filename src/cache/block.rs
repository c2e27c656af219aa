//! Blocks of logits kd keeps to reuse: the chunks of an unfinished caching pass and the part
//! files of a sharded one. Each block records what made it (the teacher run, base model, rows,
//! kernels, …) and a CRC-32 over every byte after the checksum field, so that a block is reused
//! only when it was made from the very inputs of the pass that finds it, and a damaged one is
//! refused by name instead of being copied into `logits.bin` (which would then checksum the
//! damage as good).
//!
//! Layout (little-endian):
//! | bytes      | field                                            |
//! |------------|--------------------------------------------------|
//! | 0..8       | magic `KDBLOCK\0`                                |
//! | 8..12      | CRC-32 of every byte from 12 to the end          |
//! | 12..16     | format version (1)                               |
//! | 16..20     | classes                                          |
//! | 20..28     | rows                                             |
//! | 28..32     | length L of the description                      |
//! | 32..32+L   | what made the block: a JSON object of strings    |
//! | 32+L..     | rows × classes f32 logits, row-major             |
use crate::error::{KdError, Result};
use crate::fsutil::write_bytes_atomic;
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 8] = b"KDBLOCK\0";
const VERSION: u32 = 1;
const FIXED: usize = 32;

/// What made a block, field by field ("teacher run", "base model", "kernels", …): a kept
/// block is reused only when every field equals the current pass's.
pub type Made = BTreeMap<String, String>;

/// A block read back and checked.
#[derive(Debug)]
pub struct Block {
    pub made: Made,
    pub rows: usize,
    pub classes: usize,
    pub logits: Vec<f32>,
}

/// Writes `logits` (rows × `classes`) with what made them, atomically.
pub fn write_block(path: &Path, made: &Made, classes: usize, logits: &[f32]) -> Result<()> {
    let rows = logits.len() / classes.max(1);
    if rows * classes != logits.len() {
        return Err(KdError::Internal(format!(
            "{}: {} logits are not rows of {classes}",
            path.display(),
            logits.len()
        )));
    }
    let text = serde_json::to_string(made).expect("strings serialise");
    let mut bytes = Vec::with_capacity(FIXED + text.len() + logits.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(classes as u32).to_le_bytes());
    bytes.extend_from_slice(&(rows as u64).to_le_bytes());
    bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend(logits.iter().flat_map(|v| v.to_le_bytes()));
    let crc = crc32fast::hash(&bytes[12..]);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    write_bytes_atomic(path, &bytes)
}

/// Reads and checks the block at `path`: a file that is not a whole, undamaged block is refused
/// naming it, with `remedy` saying what to do.
pub fn read_block(path: &Path, remedy: &str) -> Result<Block> {
    let bytes = std::fs::read(path).map_err(|e| KdError::io(path, e))?;
    let damaged = |problem: String| KdError::Damaged {
        path: path.to_path_buf(),
        problem,
        remedy: remedy.to_string(),
    };
    if bytes.len() < FIXED || &bytes[0..8] != MAGIC {
        return Err(damaged(format!(
            "not a kd block of logits ({} bytes, no `KDBLOCK` header): truncated or overwritten",
            bytes.len()
        )));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let rows = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes")) as usize;
    let (classes, text_len) = (u32_at(16) as usize, u32_at(28) as usize);
    let expected = rows
        .checked_mul(classes)
        .and_then(|n| n.checked_mul(4))
        .and_then(|n| n.checked_add(FIXED + text_len));
    if expected != Some(bytes.len()) {
        return Err(damaged(format!(
            "{} bytes where its header promises {} ({rows} rows × {classes} classes): truncated or corrupt",
            bytes.len(),
            expected.map_or("more".to_string(), |n| n.to_string())
        )));
    }
    let (want, got) = (u32_at(8), crc32fast::hash(&bytes[12..]));
    if want != got {
        return Err(damaged(format!(
            "does not match its checksum (CRC-32 {got:08x}, recorded {want:08x}): the file was damaged after kd wrote it"
        )));
    }
    if u32_at(12) != VERSION {
        return Err(damaged(format!("block format version {}", u32_at(12))));
    }
    let made: Made = serde_json::from_slice(&bytes[FIXED..FIXED + text_len])
        .map_err(|e| damaged(format!("unreadable description: {e}")))?;
    let logits = bytes[FIXED + text_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    Ok(Block {
        made,
        rows,
        classes,
        logits,
    })
}

/// The fields of `now` that differ from `then`, as "field: then → now", joined by "; ".
pub fn changes(then: &Made, now: &Made) -> String {
    let keys: std::collections::BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    let show = |m: &Made, k: &String| m.get(k).cloned().unwrap_or_else(|| "(none)".into());
    keys.into_iter()
        .filter(|k| then.get(*k) != now.get(*k))
        .map(|k| format!("{k}: {} → {}", show(then, k), show(now, k)))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_and_damage_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache-chunk-0.bin");
        let made = Made::from([("kernels".to_string(), "CPU: F32".to_string())]);
        let logits: Vec<f32> = (0..12).map(|i| i as f32 - 5.5).collect();
        write_block(&path, &made, 4, &logits).unwrap();
        let block = read_block(&path, "rerun with --fresh").unwrap();
        assert_eq!((block.rows, block.classes), (3, 4));
        assert_eq!((block.made, block.logits), (made.clone(), logits));
        let bytes = std::fs::read(&path).unwrap();
        let refused = |b: &[u8]| {
            std::fs::write(&path, b).unwrap();
            read_block(&path, "rerun with --fresh")
                .unwrap_err()
                .to_string()
        };
        let err = refused(&bytes[..bytes.len() - 5]);
        assert!(
            err.contains("cache-chunk-0.bin")
                && err.contains("truncated")
                && err.contains("--fresh"),
            "{err}"
        );
        for at in [9, 20, 40, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x04;
            let err = refused(&flipped);
            assert!(err.contains("cache-chunk-0.bin"), "byte {at}: {err}");
        }
        let other = Made::from([("kernels".to_string(), "CPU: BF16".to_string())]);
        assert_eq!(changes(&made, &other), "kernels: CPU: F32 → CPU: BF16");
    }
}
