//! Where a path really points: absolute, with symlinks and `..` resolved, and whether two
//! names are one file (a hard link). Output checks (`paths`) and list checks (`lists`) both ask.
use std::path::{Component, Path, PathBuf};

/// An empty path (`--out ''`) names nothing.
pub(super) fn is_empty(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// `path` made absolute with every symlink and `..` resolved: the part that exists by the file
/// system, the rest (not yet created) as written.
pub fn resolve(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<Component> = abs.components().collect();
    for k in (1..=parts.len()).rev() {
        let head: PathBuf = parts[..k].iter().collect();
        if let Ok(mut out) = head.canonicalize() {
            for part in &parts[k..] {
                match part {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(n) => out.push(n),
                    _ => {}
                }
            }
            return out;
        }
    }
    abs
}

/// Whether `a` and `b` are one existing file under two names (a hard link, or a symlink).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (identity(a), identity(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Whether the existing file `out` is one of the files of the run folder `run` under another
/// name (a hard link).
pub(super) fn linked_into(out: &Path, run: &Path) -> bool {
    let Some(id) = identity(out).filter(|_| out.is_file()) else {
        return false;
    };
    std::fs::read_dir(run).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| identity(&e.path()) == Some(id))
    })
}

#[cfg(unix)]
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_: &Path) -> Option<(u64, u64)> {
    None
}
