//! List flags that name nothing or one thing twice, refused before any work: `--teacher A
//! --teacher A` would weigh A twice in the ensemble, `--seeds 0,0` would count one student
//! twice in a sweep's statistics, and `--label-names a,,b` would name a class "".
use super::config::RunConfig;
use super::resolved::{is_empty, resolve, same_file};
use crate::error::{KdError, Result};
use std::fmt::Display;
use std::path::PathBuf;

/// The list flags of a run config: no empty entry, nothing named twice (a column may not serve
/// as two roles either).
pub fn check_lists(cfg: &RunConfig) -> Result<()> {
    check_path_list("--unlabelled", &cfg.unlabelled)?;
    if let Some(d) = &cfg.distill {
        check_path_list("--teacher", &d.teacher)?;
    }
    if let Some(names) = &cfg.label_names {
        check_names("--label-names", names)?;
    }
    let c = &cfg.columns;
    let columns: Vec<String> = c
        .text
        .iter()
        .chain(&c.text_pair)
        .chain(&c.label)
        .cloned()
        .collect();
    check_names("--text-column/--text-pair-column/--label-column", &columns)?;
    if let crate::model::TargetModules::Suffixes(t) = &cfg.lora.targets {
        check_names("--targets", t)?;
    }
    if let Some(layers) = &cfg.lora.layers {
        check_list("--layers", layers)?;
    }
    Ok(())
}

/// Names: none empty (or blank), none twice.
pub fn check_names(flag: &str, names: &[String]) -> Result<()> {
    if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
        return refuse(format!(
            "{flag} has an empty entry (number {} of {}): remove it or name it",
            i + 1,
            names.len()
        ));
    }
    check_list(flag, names)
}

/// Values: none twice.
pub fn check_list<T: PartialEq + Display>(flag: &str, items: &[T]) -> Result<()> {
    for (i, a) in items.iter().enumerate() {
        if items[..i].contains(a) {
            return refuse(format!("{flag} names `{a}` twice: name each once"));
        }
    }
    Ok(())
}

/// Paths: none empty, none naming the same file or folder twice (by any path).
pub fn check_path_list(flag: &str, paths: &[PathBuf]) -> Result<()> {
    if paths.iter().any(|p| is_empty(p)) {
        return refuse(format!("{flag} is empty: name a file or folder"));
    }
    for (i, a) in paths.iter().enumerate() {
        if let Some(b) = paths[..i]
            .iter()
            .find(|b| resolve(a) == resolve(b) || same_file(a, b))
        {
            return refuse(format!(
                "{flag} names {} twice (also as {}): name each once",
                a.display(),
                b.display()
            ));
        }
    }
    Ok(())
}

fn refuse(message: String) -> Result<()> {
    Err(KdError::Config(message))
}
