//! The dependency rule of `docs/architecture.md`, checked: the `layers` block of its section
//! "The dependency rule" lists the top-level modules, one layer a line, lowest first, and every
//! `crate::…` path in `src/` (comments, strings and `#[cfg(test)]` items aside) must name a
//! module of a line above the file's own, or an item of the crate root (`crate::now`). A module
//! missing from the block, or a block entry with no module, fails too, so the block stays the
//! whole map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DOC: &str = "docs/architecture.md";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `layers` block of a document's "The dependency rule" section: module → layer (0 lowest).
fn parse_layers(doc: &str) -> Result<BTreeMap<String, usize>, String> {
    let section = doc
        .split("\n## The dependency rule")
        .nth(1)
        .ok_or("no section \"## The dependency rule\"")?;
    let section = section.split("\n## ").next().unwrap_or(section);
    let block = section
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .ok_or("no ```layers block in \"The dependency rule\"")?;
    let mut layers = BTreeMap::new();
    let lines = block
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty());
    for (layer, line) in lines.enumerate() {
        for module in line.split_whitespace() {
            if layers.insert(module.to_string(), layer).is_some() {
                return Err(format!("module {module} is listed twice"));
            }
        }
    }
    Ok(layers)
}

/// `source` with comments, string and char literals blanked (newlines kept, so line numbers
/// hold), and every item under `#[cfg(test)]` blanked too.
fn code_of(source: &str) -> Vec<char> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = chars.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(chars.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let at = |k: usize| chars.get(k).copied().unwrap_or('\0');
        let start = i;
        match chars[i] {
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                blank(&mut out, start, i);
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                blank(&mut out, start, i);
            }
            'r' if (at(i + 1) == '"' || at(i + 1) == '#')
                && !(i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')) =>
            {
                let mut hashes = 0;
                let mut k = i + 1;
                while at(k) == '#' {
                    hashes += 1;
                    k += 1;
                }
                if at(k) != '"' {
                    i += 1;
                    continue;
                }
                k += 1;
                loop {
                    if k >= chars.len() {
                        break;
                    }
                    if chars[k] == '"' && (1..=hashes).all(|h| at(k + h) == '#') {
                        k += 1 + hashes;
                        break;
                    }
                    k += 1;
                }
                i = k;
                blank(&mut out, start, i);
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                blank(&mut out, start, i);
            }
            '\'' if at(i + 1) == '\\' => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                blank(&mut out, start, i);
            }
            '\'' if at(i + 2) == '\'' => {
                i += 3;
                blank(&mut out, start, i);
            }
            _ => i += 1,
        }
    }
    // `#[cfg(test)]` items: to the `;` of `mod x;`, or to the brace closing the item's body.
    let text: String = out.iter().collect();
    let mut skips = Vec::new();
    let mut search = 0;
    while let Some(found) = text[search..].find("#[cfg(test)]") {
        let begin = search + found;
        let rest = &text[begin..];
        let end = match (rest.find(';'), rest.find('{')) {
            (Some(semi), Some(open)) if semi < open => begin + semi + 1,
            (_, Some(open)) => {
                let mut depth = 0usize;
                let mut end = text.len();
                for (offset, c) in rest[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = begin + open + offset + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(semi), None) => begin + semi + 1,
            (None, None) => text.len(),
        };
        skips.push((text[..begin].chars().count(), text[..end].chars().count()));
        search = end;
    }
    for (from, to) in skips {
        blank(&mut out, from, to);
    }
    out
}

/// The top-level modules a file's code names through `crate::`, with the line and the path as
/// written: `crate::a::b` gives `a`, `use crate::{a::b, c}` gives `a` and `c`.
fn crate_paths(code: &[char]) -> Vec<(usize, String, String)> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let line_at = |k: usize| code[..k].iter().filter(|c| **c == '\n').count() + 1;
    let ident_at = |mut k: usize| {
        let begin = k;
        while k < code.len() && is_ident(code[k]) {
            k += 1;
        }
        (code[begin..k].iter().collect::<String>(), k)
    };
    let skip_space = |mut k: usize| {
        while k < code.len() && code[k].is_whitespace() {
            k += 1;
        }
        k
    };
    let needle: Vec<char> = "crate::".chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + needle.len() <= code.len() {
        let preceded = i > 0 && (is_ident(code[i - 1]) || code[i - 1] == '$');
        if code[i..i + needle.len()] != needle[..] || preceded {
            i += 1;
            continue;
        }
        let k = skip_space(i + needle.len());
        if code.get(k) == Some(&'{') {
            // A group: the first name of each of its top-level elements.
            let mut depth = 0usize;
            let mut expect_name = true;
            let mut k = k;
            while k < code.len() {
                match code[k] {
                    '{' => {
                        depth += 1;
                        expect_name = depth == 1;
                        k += 1;
                    }
                    '}' => {
                        depth -= 1;
                        k += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' => {
                        expect_name = depth == 1;
                        k += 1;
                    }
                    c if expect_name && is_ident(c) => {
                        let (name, next) = ident_at(k);
                        found.push((line_at(k), name.clone(), format!("crate::{{… {name} …}}")));
                        expect_name = false;
                        k = next;
                    }
                    _ => k += 1,
                }
            }
            i = k;
        } else {
            let (name, mut next) = ident_at(k);
            let mut path = format!("crate::{name}");
            while code.get(next) == Some(&':') && code.get(next + 1) == Some(&':') {
                let (part, after) = ident_at(next + 2);
                if part.is_empty() {
                    break;
                }
                path.push_str("::");
                path.push_str(&part);
                next = after;
            }
            if !name.is_empty() {
                found.push((line_at(i), name, path));
            }
            i = next.max(i + 1);
        }
    }
    found
}

/// The violations in one file of top-level module `module`, as `file:line: …` lines.
fn violations_in(
    file: &str,
    module: &str,
    source: &str,
    layers: &BTreeMap<String, usize>,
    modules: &[String],
) -> Vec<String> {
    let Some(&own) = layers.get(module) else {
        return vec![format!(
            "{file}: module `{module}` is not in the layers block of {DOC} (\"The dependency rule\"): add it to the line of its layer"
        )];
    };
    let mut found = Vec::new();
    for (line, target, path) in crate_paths(&code_of(source)) {
        if target == module {
            continue;
        }
        match layers.get(&target) {
            Some(&layer) if layer < own => {}
            Some(&layer) => found.push(format!(
                "{file}:{line}: `{path}`: {module} may not import {target} ({target} is {} {module} in the layers block of {DOC})",
                if layer == own { "on the same line as" } else { "above" }
            )),
            None if modules.contains(&target) => found.push(format!(
                "{file}:{line}: `{path}`: module `{target}` is not in the layers block of {DOC}"
            )),
            // An item of the crate root (`crate::now`, `crate::digest`).
            None => {}
        }
    }
    found
}

/// `src/`'s top-level modules (`src/x.rs`, `src/x/`), the crate roots left out.
fn top_level_modules(src: &Path) -> Vec<String> {
    let mut modules: Vec<String> = std::fs::read_dir(src)
        .expect("src/")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.path().is_dir() {
                Some(name)
            } else {
                name.strip_suffix(".rs").map(str::to_string)
            }
        })
        .filter(|name| name != "lib" && name != "main")
        .collect();
    modules.sort();
    modules
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_follows_the_dependency_rule_of_the_architecture_page() {
    let root = root();
    let doc = std::fs::read_to_string(root.join(DOC)).expect("docs/architecture.md");
    let layers = parse_layers(&doc).unwrap_or_else(|e| panic!("{DOC}: {e}"));
    let src = root.join("src");
    let modules = top_level_modules(&src);
    let mut problems: Vec<String> = layers
        .keys()
        .filter(|listed| !modules.contains(listed))
        .map(|listed| {
            format!("{DOC}: the layers block lists `{listed}`, which is no module of src/")
        })
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    for path in files {
        let relative = path.strip_prefix(&root).unwrap_or(&path);
        let inside = path.strip_prefix(&src).unwrap_or(&path);
        let first = inside
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .unwrap_or_default();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("readable source");
        problems.extend(violations_in(
            &relative.display().to_string(),
            &module,
            &source,
            &layers,
            &modules,
        ));
    }
    assert!(
        problems.is_empty(),
        "imports against the dependency rule ({} found):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checker itself: it finds a violation in a path, a `use` group and a type position, and
/// leaves comments, strings, test modules and root items alone.
#[test]
fn the_layering_check_finds_what_it_should_and_nothing_else() {
    let doc = "# x\n\n## The dependency rule\n\n```layers\ndomain  # bottom\nhistory\napp\n```\n\n## Next\n";
    let layers = parse_layers(doc).unwrap();
    assert_eq!(layers["domain"], 0);
    assert_eq!(layers["app"], 2);
    let modules: Vec<String> = ["domain", "history", "app", "orphan"]
        .map(String::from)
        .to_vec();
    let source = r##"//! Mentions crate::app in a comment.
use crate::domain::Thing;
use crate::{
    domain::Other,
    app::App,
};
fn f(x: crate::app::View) -> String {
    let _ = crate::now();
    /* crate::app in a block comment */
    let _ = r#"crate::app in a raw string"#;
    format!("crate::app in a string {}", '"')
}
#[cfg(test)]
mod tests {
    use crate::app::Anything;
    fn g() { let _ = "}"; }
}
fn h() -> crate::orphan::X { todo!() }
"##;
    let found = violations_in("src/history/x.rs", "history", source, &layers, &modules);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with("src/history/x.rs:5: `crate::{… app …}`: history may not import app (app is above history"), "{}", found[0]);
    assert!(
        found[1].starts_with("src/history/x.rs:7: `crate::app::View`: history may not import app"),
        "{}",
        found[1]
    );
    assert!(
        found[2].starts_with(
            "src/history/x.rs:18: `crate::orphan::X`: module `orphan` is not in the layers block"
        ),
        "{}",
        found[2]
    );
    // Beside is not below.
    let layers =
        parse_layers("\n## The dependency rule\n```layers\ndomain history\n```\n").unwrap();
    let found = violations_in(
        "src/domain/y.rs",
        "domain",
        "use crate::history::Moment;",
        &layers,
        &modules,
    );
    assert!(
        found[0].contains("history is on the same line as domain"),
        "{found:?}"
    );
}
