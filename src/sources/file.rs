//! `kind = "file"`: a path, or a pattern with `*` and `?` in its file name
//! (`exports/*.csv`), of NDJSON, JSON or CSV files in the import format, resolved against the
//! project folder and read again at every sync with the importers of `hypod import`
//! ([`crate::history::import`]). Matching files are read in name order; an id in two of them
//! is taken from the later one, as `hypod import A B` does.

use super::{FileSource, Progress, Pull, Record, SourceError};
use crate::history::import::{self, Location, Source};
use std::path::{Path, PathBuf};

/// Whether a `path` setting can be read: not empty, and wildcards (`*`, `?`) only in its last
/// component (the folder is named as it is).
pub fn check_pattern(path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("must name a file or a pattern such as \"exports/*.csv\"".into());
    }
    let (folder, _) = split(path);
    if folder.to_string_lossy().contains(['*', '?', '[']) {
        return Err(format!(
            "{path:?}: wildcards are allowed in the file name only (\"exports/*.csv\"), not in its folders"
        ));
    }
    Ok(())
}

/// The folder part and the file-name part of a path setting.
fn split(path: &str) -> (PathBuf, String) {
    let path = Path::new(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
    (folder, name)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters and `?` for
/// one character.
fn matches(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
        Some(('?', rest)) => !name.is_empty() && matches(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && matches(rest, &name[1..]),
    }
}

/// The files `setting` names, resolved against `base_dir`, in name order, each with the path
/// as it is shown (relative as the setting wrote it).
fn files(
    name: &str,
    setting: &str,
    base_dir: &Path,
) -> Result<Vec<(PathBuf, String)>, SourceError> {
    let setup = |message: String| SourceError::Setup {
        source_name: name.to_string(),
        message,
    };
    let (folder, file_name) = split(setting);
    let wild = file_name.contains(['*', '?']);
    let resolved_folder = if folder.is_absolute() {
        folder.clone()
    } else {
        base_dir.join(&folder)
    };
    if !wild {
        let path = resolved_folder.join(&file_name);
        if !path.is_file() {
            return Err(setup(format!(
                "path {setting:?}: no such file ({}); fix `path` or restore the file",
                path.display()
            )));
        }
        return Ok(vec![(path, setting.to_string())]);
    }
    let entries = std::fs::read_dir(&resolved_folder).map_err(|e| {
        setup(format!(
            "path {setting:?}: cannot read the folder {}: {e}",
            resolved_folder.display()
        ))
    })?;
    let pattern: Vec<char> = file_name.chars().collect();
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            setup(format!(
                "path {setting:?}: cannot read the folder {}: {e}",
                resolved_folder.display()
            ))
        })?;
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let chars: Vec<char> = entry_name.chars().collect();
        if matches(&pattern, &chars) && entry.path().is_file() {
            found.push((
                entry.path(),
                folder.join(&entry_name).to_string_lossy().into_owned(),
            ));
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(setup(format!(
            "path {setting:?} matches no file in {}",
            resolved_folder.display()
        )));
    }
    Ok(found)
}

/// Reads every file the source names. A file that cannot be read is a setup error; an invalid
/// record a [`SourceError::Record`] naming the file, the line (or record) and the field.
pub fn pull(
    name: &str,
    settings: &FileSource,
    base_dir: &Path,
    progress: &dyn Progress,
) -> Result<Pull, SourceError> {
    let files = files(name, &settings.path, base_dir)?;
    let mut pull = Pull::default();
    let total = files.len() as u64;
    // id -> index in `pull.records`, so that a later file's record replaces an earlier one.
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut names = Vec::with_capacity(files.len());
    for (done, (path, shown)) in files.into_iter().enumerate() {
        let report = import::parse_sources(&[Source::File(path.clone())]);
        pull.requests += 1;
        if let Some(problem) = report.problems.first() {
            return Err(match problem.location {
                Location::Whole => SourceError::Setup {
                    source_name: name.to_string(),
                    message: format!("{shown}: {}", problem.message),
                },
                Location::Line(line) => SourceError::Record {
                    source_name: name.to_string(),
                    origin: format!("{shown} line {line}"),
                    field: problem.field.clone().unwrap_or_else(|| "(record)".into()),
                    message: problem.message.clone(),
                },
                Location::Record(n) => SourceError::Record {
                    source_name: name.to_string(),
                    origin: format!("{shown} record {n}"),
                    field: problem.field.clone().unwrap_or_else(|| "(record)".into()),
                    message: problem.message.clone(),
                },
            });
        }
        for experiment in report.experiments {
            let value = serde_json::to_value(&experiment).map_err(|e| SourceError::Record {
                source_name: name.to_string(),
                origin: format!("{shown} experiment {}", experiment.id),
                field: "(record)".into(),
                message: e.to_string(),
            })?;
            let record = Record {
                value,
                origin: format!("{shown} experiment {}", experiment.id),
            };
            match at.get(&experiment.id) {
                Some(&i) => pull.records[i] = record,
                None => {
                    at.insert(experiment.id.clone(), pull.records.len());
                    pull.records.push(record);
                }
            }
        }
        names.push(shown);
        progress.update(done as u64 + 1, Some(total), "files");
    }
    pull.state = serde_json::json!({ "files": names });
    Ok(pull)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_file_names_only() {
        let m = |p: &str, n: &str| {
            matches(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*.csv", "q3.csv"));
        assert!(m("q?.csv", "q3.csv"));
        assert!(!m("*.csv", "q3.ndjson"));
        assert!(m("*", ""));
        assert!(check_pattern("exports/*.csv").is_ok());
        assert!(check_pattern("ex*/a.csv").is_err());
        assert!(check_pattern(" ").is_err());
    }
}
