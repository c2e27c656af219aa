//! Writing artefacts safely: a half-written file never replaces a good one.
use crate::error::{KdError, Result};
use std::path::{Path, PathBuf};

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
