//! Writing artefacts safely: a half-written file never replaces a good one; and reading back the
//! ones kd memory-maps (the caches), which kd only ever replaces by rename.
use crate::error::{KdError, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The first `len` bytes of `path` (fewer if the file is shorter): a cache's header, read
/// without mapping the whole file.
pub fn read_prefix(path: &Path, len: usize) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| KdError::io(path, e))?;
    let mut head = Vec::with_capacity(len);
    // `take` + `read_to_end`: one `read` may return fewer bytes than the file holds.
    file.take(len as u64)
        .read_to_end(&mut head)
        .map_err(|e| KdError::io(path, e))?;
    Ok(head)
}

/// `path` memory-mapped read-only.
pub fn map_readonly(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| KdError::io(path, e))?;
    // SAFETY: kd replaces the files it maps by rename, never in place, so the mapping stays valid.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| KdError::io(path, e))
}

/// Writes `path` by letting `write` fill a temporary file beside it, then renaming it into
/// place, so that a crash or a bad input leaves any existing artefact untouched.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let tmp = temp_path(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| KdError::io(parent, e))?;
    }
    match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| KdError::io(path, e)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes bytes atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| KdError::io(tmp, e))
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
