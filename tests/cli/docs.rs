//! The documentation cannot drift from the binary. Every page (`README.md`, `docs/*.md`) is read
//! and checked against the code:
//!
//! - every `hypod …` command in a code block parses with hypod's own command-line parser
//!   ([`hypod::cli::Args`]), and every `hypod …` written inline names commands and flags that
//!   exist (a synopsis such as `hypod export [--status S] [--format json\|ndjson]` is read with
//!   its brackets and alternatives; placeholders in capitals stand for values);
//! - the blocks marked `<!-- docs-test: run -->` run end to end in a temporary folder (the
//!   README's walk from a history to a reviewed proposal, the demo; `ID` stands for a pending
//!   proposal one approval decides), the walk's export holds the approved proposal, and the
//!   commands the demo suggests parse;
//! - every ```` ```toml ```` block loads: a configuration through hypod's configuration loader
//!   (which refuses unknown keys), a policy rule as a policy set (`hypod policy check`), a policy
//!   test case as a test of the shipped policies (`hypod policy test`);
//! - every configuration key a page names (`section.key`, `HYPOD_SECTION__KEY`) is a key the
//!   loader knows;
//! - every `cargo test` / `cargo bench` names a test target, bench or test module that exists;
//! - every relative link reaches a file and every `#anchor` a heading; every repository path
//!   written inline (`src/…`, `tests/…`, …) exists.
//!
//! A problem is reported with its page, its line and what is wrong.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser as _;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One Markdown page.
struct Page {
    /// Its path from the repository's root (`README.md`, `docs/model.md`).
    name: String,
    text: String,
}

/// A fenced code block.
struct Block {
    /// The first word of the info string (`sh`, `toml`, `json`, or empty).
    lang: String,
    /// The line of the opening fence (1-based).
    line: usize,
    /// Its lines, each with its own line number.
    lines: Vec<(usize, String)>,
    /// Marked `<!-- docs-test: run -->` on the line before it.
    run: bool,
}

fn pages() -> Vec<Page> {
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| Page {
            text: std::fs::read_to_string(Path::new(ROOT).join(&name)).expect("read page"),
            name,
        })
        .collect()
}

fn page(name: &str, text: &str) -> Page {
    Page {
        name: name.to_string(),
        text: text.to_string(),
    }
}

fn blocks(page: &Page) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(String, Block)> = None;
    let mut previous = "";
    for (i, line) in page.text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if trimmed.starts_with("```") {
                    let fence: String = trimmed.chars().take_while(|c| *c == '`').collect();
                    let info = trimmed[fence.len()..].trim();
                    let block = Block {
                        lang: info.split_whitespace().next().unwrap_or("").to_string(),
                        line: number,
                        lines: Vec::new(),
                        run: previous.trim() == "<!-- docs-test: run -->",
                    };
                    open = Some((fence, block));
                }
            }
            Some((fence, mut block)) => {
                if trimmed.starts_with(&fence) && trimmed.trim_start_matches('`').trim().is_empty()
                {
                    out.push(block);
                } else {
                    block.lines.push((number, line.to_string()));
                    open = Some((fence, block));
                }
            }
        }
        previous = line;
    }
    out
}

/// The page's text outside code blocks, with each fenced line blanked (line numbers stay).
fn prose(page: &Page) -> String {
    let mut fenced = BTreeSet::new();
    for block in blocks(page) {
        fenced.insert(block.line);
        fenced.insert(block.lines.last().map_or(block.line, |(n, _)| *n) + 1);
        fenced.extend(block.lines.iter().map(|(n, _)| *n));
    }
    page.text
        .lines()
        .enumerate()
        .map(|(i, l)| if fenced.contains(&(i + 1)) { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Inline code spans outside code blocks, with the line they start on; a span may continue on
/// the next line (its line break becomes a space).
fn spans(page: &Page) -> Vec<(usize, String)> {
    let text = prose(page);
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        if chars[i] == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let ticks = chars[i..].iter().take_while(|c| **c == '`').count();
        let start = i + ticks;
        let mut j = start;
        let mut end = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let run = chars[j..].iter().take_while(|c| **c == '`').count();
                if run == ticks {
                    end = Some(j);
                    break;
                }
                j += run;
            } else if chars[j] == '\n' && j + 1 < chars.len() && chars[j + 1] == '\n' {
                break; // a paragraph ends: an unmatched backtick
            } else {
                j += 1;
            }
        }
        match end {
            Some(end) => {
                let content: String = chars[start..end].iter().collect();
                out.push((line, content.replace('\n', " ").trim().to_string()));
                line += content.matches('\n').count();
                i = end + ticks;
            }
            None => i = start,
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Shell lines

/// A code block's lines as shell commands: continuation lines joined, comments dropped, split
/// at `&&`, `||`, `|`, `;` and `&`. Each simple command is its words, with its line number.
fn shell_commands(lines: &[(usize, String)]) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (number, line) in lines {
        let (start, mut text) = match pending.take() {
            Some((start, text)) => (start, text + " " + line.trim()),
            None => (*number, line.trim().to_string()),
        };
        if text.ends_with('\\') {
            text.pop();
            pending = Some((start, text));
            continue;
        }
        for command in split_shell(&text) {
            if !command.is_empty() {
                out.push((start, command));
            }
        }
    }
    out
}

/// Words of one line, split into simple commands.
fn split_shell(line: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let end_word = |word: &mut String, in_word: &mut bool, commands: &mut Vec<Vec<String>>| {
        if *in_word {
            commands
                .last_mut()
                .expect("a command")
                .push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(next) = chars.next() {
                                word.push(next);
                            }
                        }
                        _ => word.push(c),
                    }
                }
            }
            '#' if !in_word => break,
            ' ' | '\t' => end_word(&mut word, &mut in_word, &mut commands),
            '&' | '|' | ';' => {
                end_word(&mut word, &mut in_word, &mut commands);
                if matches!(chars.peek(), Some('&') | Some('|')) {
                    chars.next();
                }
                commands.push(Vec::new());
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut word, &mut in_word, &mut commands);
    commands
        .into_iter()
        .map(|words| {
            // Redirections and their targets are not arguments.
            let mut kept = Vec::new();
            let mut skip_next = false;
            for w in words {
                let redirection = w.starts_with('>') || w.starts_with('<') || w.starts_with("2>");
                if skip_next {
                    skip_next = false;
                } else if matches!(w.as_str(), ">" | ">>" | "<" | "2>") {
                    skip_next = true;
                } else if !redirection {
                    kept.push(w);
                }
            }
            kept
        })
        .collect()
}

/// What a shell command is to these checks.
enum Invocation {
    /// hypod's arguments (from `hypod …`, `…/hypod …` or `cargo run -- …`).
    Hypod(Vec<String>),
    /// `cargo` and its arguments.
    Cargo(Vec<String>),
    Cd(String),
    Other,
}

fn invocation(words: &[String]) -> Invocation {
    let words: Vec<&String> = words
        .iter()
        .skip_while(|w| w.contains('=') && !w.starts_with('-') && !w.starts_with('='))
        .collect();
    let Some(first) = words.first() else {
        return Invocation::Other;
    };
    let rest = || words[1..].iter().map(|w| w.to_string()).collect::<Vec<_>>();
    if *first == "hypod" || first.ends_with("/hypod") {
        Invocation::Hypod(rest())
    } else if *first == "cargo" {
        let args = rest();
        if args.first().map(String::as_str) == Some("run") {
            let after = args
                .iter()
                .position(|a| a == "--")
                .map_or(Vec::new(), |i| args[i + 1..].to_vec());
            Invocation::Hypod(after)
        } else {
            Invocation::Cargo(args)
        }
    } else if *first == "cd" {
        Invocation::Cd(words.get(1).map_or(".".to_string(), |w| w.to_string()))
    } else {
        Invocation::Other
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

fn parse(args: &[String]) -> Result<(), clap::Error> {
    let mut argv = vec!["hypod".to_string()];
    argv.extend(args.iter().cloned());
    match hypod::cli::Args::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => Ok(()),
        Err(e) => Err(e),
    }
}

fn first_line(err: &clap::Error) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

/// A value written as a placeholder (`S`, `SEQ:HASH`, `FILE.json`), not as a real value.
fn is_placeholder(value: &str) -> bool {
    value.chars().any(|c| c.is_ascii_uppercase())
        && value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_:.-".contains(c))
}

/// An inline mention as concrete words: `[` `]` dropped, the first of `a|b` alternatives,
/// `FILE...` as `FILE`, cut at a shell pipe or redirection.
fn synopsis_words(span: &str) -> Vec<String> {
    let span = span.replace("\\|", "|");
    let mut words = Vec::new();
    for word in span.split_whitespace() {
        if matches!(word, "|" | ">" | "<" | "&&" | "#") {
            break;
        }
        let word = word.trim_matches(|c| c == '[' || c == ']');
        let word = word.split('|').next().unwrap_or("");
        let word = word.trim_end_matches("...").trim_end_matches('…');
        if !word.is_empty() {
            words.push(word.to_string());
        }
    }
    words
}

/// Commands in code blocks must parse; inline mentions must name real commands and flags
/// (a mention may leave out required arguments, and may write a value as a placeholder).
fn command_problems(pages: &[Page]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for page in pages {
        for block in blocks(page) {
            for (line, words) in shell_commands(&block.lines) {
                if let Invocation::Hypod(args) = invocation(&words) {
                    checked += 1;
                    if let Err(e) = parse(&args) {
                        problems.push(format!(
                            "{}:{line}: `hypod {}` does not parse: {}",
                            page.name,
                            args.join(" "),
                            first_line(&e)
                        ));
                    }
                }
            }
        }
        for (line, span) in spans(page) {
            let words = synopsis_words(&span);
            let Invocation::Hypod(args) = invocation(&words) else {
                continue;
            };
            if args.is_empty() {
                continue;
            }
            checked += 1;
            let Err(e) = parse(&args) else {
                continue;
            };
            let fine = match e.kind() {
                ErrorKind::MissingRequiredArgument
                | ErrorKind::MissingSubcommand
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => true,
                ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
                    matches!(e.get(ContextKind::InvalidValue), Some(ContextValue::String(v)) if is_placeholder(v))
                }
                _ => false,
            };
            if !fine {
                problems.push(format!(
                    "{}:{line}: `{span}` names what hypod does not have: {}",
                    page.name,
                    first_line(&e)
                ));
            }
        }
    }
    (checked, problems)
}

/// `cargo test` and `cargo bench` name targets and test modules that exist.
fn cargo_problems(pages: &[Page]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = 0;
    let root = Path::new(ROOT);
    for page in pages {
        let mut found: Vec<(usize, Vec<String>)> = Vec::new();
        for block in blocks(page) {
            for (line, words) in shell_commands(&block.lines) {
                if let Invocation::Cargo(args) = invocation(&words) {
                    found.push((line, args));
                }
            }
        }
        for (line, span) in spans(page) {
            if let Invocation::Cargo(args) = invocation(&synopsis_words(&span)) {
                found.push((line, args));
            }
        }
        for (line, args) in found {
            let Some(sub) = args.first() else { continue };
            if sub != "test" && sub != "bench" {
                continue;
            }
            checked += 1;
            let mut problem = |what: String| problems.push(format!("{}:{line}: {what}", page.name));
            let mut target: Option<PathBuf> = None;
            let mut lib = false;
            let mut words = args[1..].iter();
            while let Some(arg) = words.next() {
                match arg.as_str() {
                    "--test" => {
                        let name = words.next().cloned().unwrap_or_default();
                        if is_placeholder(&name) {
                            continue;
                        }
                        let file = root.join("tests").join(format!("{name}.rs"));
                        let dir = root.join("tests").join(&name).join("main.rs");
                        if file.is_file() {
                            target = Some(file);
                        } else if dir.is_file() {
                            target = Some(root.join("tests").join(&name));
                        } else {
                            problem(format!(
                                "`cargo {}`: there is no test target `{name}`",
                                args.join(" ")
                            ));
                        }
                    }
                    "--bench" => {
                        let name = words.next().cloned().unwrap_or_default();
                        if !is_placeholder(&name)
                            && !root.join("benches").join(format!("{name}.rs")).is_file()
                        {
                            problem(format!(
                                "`cargo {}`: there is no bench `{name}`",
                                args.join(" ")
                            ));
                        }
                    }
                    "--lib" => lib = true,
                    filter if filter.contains("::") && !filter.starts_with('-') => {
                        let (module, rest) = filter.split_once("::").expect("::");
                        let base = if lib {
                            Some(root.join("src"))
                        } else {
                            target.clone().filter(|t| t.is_dir())
                        };
                        let Some(base) = base else { continue };
                        let file = [
                            base.join(format!("{module}.rs")),
                            base.join(module).join("mod.rs"),
                        ]
                        .into_iter()
                        .find(|f| f.is_file());
                        match file {
                            None => problem(format!(
                                "`cargo {}`: there is no module `{module}` in {}",
                                args.join(" "),
                                base.strip_prefix(root).unwrap_or(&base).display()
                            )),
                            Some(file) if !rest.is_empty() => {
                                let source = std::fs::read_to_string(&file).expect("read module");
                                if !source.contains(&format!("fn {rest}")) {
                                    problem(format!(
                                        "`cargo {}`: no test in {} starts with `{rest}`",
                                        args.join(" "),
                                        file.strip_prefix(root).unwrap_or(&file).display()
                                    ));
                                }
                            }
                            Some(_) => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    (checked, problems)
}

// ---------------------------------------------------------------------------------------------
// Configuration

const SECTIONS: [&str; 9] = [
    "database",
    "schedule",
    "proposer",
    "llm",
    "analysis",
    "governance",
    "server",
    "notify",
    "audit",
];

/// Loads `text` as a hypod.toml with hypod's own loader, in a folder with a `policies/`.
fn load_config(text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("policies")).expect("policies/");
    let path = dir.path().join("hypod.toml");
    std::fs::write(&path, text).expect("write hypod.toml");
    hypod::config::Config::load_with_env(Some(&path), &[])
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether `section.key` (or `section.table.key`) is a key the loader knows: a probe value is
/// refused for its type, never as an unknown field.
fn is_key(path: &[&str]) -> bool {
    let (key, table) = path.split_last().expect("a key");
    let probe = format!("[{}]\n{key} = 0\n", table.join("."));
    match load_config(&probe) {
        Ok(()) => true,
        Err(message) => !message.contains("unknown field"),
    }
}

/// Words in a span that look like `section.key` or `section.table.key`.
fn key_mentions(span: &str) -> Vec<String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || "_./:-".contains(c);
    let mut out = Vec::new();
    for word in span.split(|c: char| !is_word(c)) {
        let word = word.trim_end_matches('.');
        let parts: Vec<&str> = word.split('.').collect();
        if (2..=3).contains(&parts.len())
            && SECTIONS.contains(&parts[0])
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        {
            out.push(word.to_string());
        }
    }
    out
}

/// `HYPOD_SECTION__KEY` variables in a text, as `section.key`.
fn env_mentions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')) {
        let Some(rest) = word.strip_prefix("HYPOD_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        if word == "HYPOD_SECTION__KEY" || key.is_empty() {
            continue;
        }
        out.push((
            word.to_string(),
            format!(
                "{}.{}",
                section.to_ascii_lowercase(),
                key.to_ascii_lowercase()
            ),
        ));
    }
    out
}

/// Every configuration key a page names is one the loader knows.
fn key_problems(pages: &[Page]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for page in pages {
        let mut mentions: Vec<(usize, String, String)> = Vec::new();
        for (line, span) in spans(page) {
            for key in key_mentions(&span) {
                mentions.push((line, key.clone(), key));
            }
        }
        for (i, line) in page.text.lines().enumerate() {
            for (var, key) in env_mentions(line) {
                mentions.push((i + 1, var, key));
            }
        }
        for (line, written, key) in mentions {
            checked.insert(key.clone());
            let parts: Vec<&str> = key.split('.').collect();
            if !is_key(&parts) {
                problems.push(format!(
                    "{}:{line}: `{written}` is not a configuration key",
                    page.name
                ));
            }
        }
    }
    (checked.len(), problems)
}

/// Runs hypod in `dir` with no configuration from the environment.
fn hypod_in(dir: &Path, args: &[String]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hypod"));
    command.args(args).current_dir(dir);
    for (var, _) in std::env::vars() {
        if var.starts_with("HYPOD_") {
            command.env_remove(var);
        }
    }
    command.output().expect("run hypod")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Every ```toml block loads: configurations through the loader, policy rules as a policy set,
/// policy test cases against the shipped policies.
fn toml_problems(pages: &[Page]) -> (usize, usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut keys = 0;
    for page in pages {
        for block in blocks(page).into_iter().filter(|b| b.lang == "toml") {
            checked += 1;
            let text: String = block.lines.iter().map(|(_, l)| format!("{l}\n")).collect();
            let at = format!("{}:{}", page.name, block.line);
            if text.contains("[[rule]]") || text.contains("[[case]]") {
                let dir = tempfile::tempdir().expect("temp dir");
                let policies = dir.path().join("policies");
                let (file, command) = if text.contains("[[rule]]") {
                    std::fs::create_dir_all(&policies).expect("policies/");
                    std::fs::copy(
                        Path::new(ROOT).join("policies/catalog.toml"),
                        policies.join("catalog.toml"),
                    )
                    .expect("catalog");
                    (policies.join("docs-example.toml"), "check")
                } else {
                    copy_dir(&Path::new(ROOT).join("policies"), &policies);
                    (policies.join("tests/docs-example.toml"), "test")
                };
                std::fs::write(&file, &text).expect("write example");
                std::fs::write(
                    dir.path().join("hypod.toml"),
                    "[governance]\npolicies = \"policies\"\n",
                )
                .expect("hypod.toml");
                let args = vec![
                    "--config".to_string(),
                    "hypod.toml".to_string(),
                    "policy".to_string(),
                    command.to_string(),
                ];
                let output = hypod_in(dir.path(), &args);
                if !output.status.success() {
                    problems.push(format!(
                        "{at}: the example fails `hypod policy {command}`: {}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    ));
                }
            } else {
                keys += block
                    .lines
                    .iter()
                    .filter(|(_, l)| {
                        let l = l.trim_start();
                        l.starts_with(|c: char| c.is_ascii_lowercase()) && l.contains('=')
                    })
                    .count();
                if let Err(message) = load_config(&text) {
                    // Point at the line of the key the loader names, when it is in the block.
                    let named = message
                        .split('`')
                        .filter(|w| !w.contains(' '))
                        .filter_map(|w| w.rsplit('.').next())
                        .collect::<Vec<_>>();
                    let line = block
                        .lines
                        .iter()
                        .find(|(_, l)| {
                            let key = l.split('=').next().unwrap_or("").trim();
                            !key.is_empty() && l.contains('=') && named.contains(&key)
                        })
                        .map_or(block.line, |(n, _)| *n);
                    problems.push(format!("{}:{line}: not a hypod.toml: {message}", page.name));
                }
            }
        }
    }
    (checked, keys, problems)
}

// ---------------------------------------------------------------------------------------------
// Links and paths

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let doc = page("", text);
    let mut seen = BTreeSet::new();
    let mut out = BTreeSet::new();
    for line in prose(&doc).lines() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor.clone());
        out.insert(anchor);
    }
    out
}

/// `[text](target)` and `![alt](target)` outside code, with their lines.
fn links(page: &Page) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in prose(page).lines().enumerate() {
        // Inline code is not a link.
        let mut text = String::new();
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                text.push(c);
            }
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    out
}

const REPOSITORY_FOLDERS: [&str; 10] = [
    "src/",
    "tests/",
    "docs/",
    "examples/",
    "deploy/",
    "policies/",
    "migrations/",
    "tools/",
    "benches/",
    "prompts/",
];

/// Every relative link reaches a file (and its anchor a heading); every repository path
/// written inline exists.
fn link_problems(pages: &[Page]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut checked = 0;
    let root = Path::new(ROOT);
    for page in pages {
        let dir = Path::new(&page.name).parent().unwrap_or(Path::new(""));
        for (line, target) in links(page) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                root.join(&page.name)
            } else {
                root.join(dir).join(path)
            };
            if !file.exists() {
                problems.push(format!(
                    "{}:{line}: the link `{target}` leads nowhere",
                    page.name
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                if !anchors(&text).contains(anchor) {
                    problems.push(format!(
                        "{}:{line}: the link `{target}`: no heading has the anchor #{anchor}",
                        page.name
                    ));
                }
            }
        }
        for (line, span) in spans(page) {
            if span.contains(' ')
                || span.contains('*')
                || span.contains('{')
                || span.contains('…')
                || !REPOSITORY_FOLDERS.iter().any(|f| span.starts_with(f))
            {
                continue;
            }
            checked += 1;
            if !root.join(&span).exists() {
                problems.push(format!("{}:{line}: `{span}` does not exist", page.name));
            }
        }
    }
    (checked, problems)
}

// ---------------------------------------------------------------------------------------------
// Blocks that run

/// Runs a block's commands in `dir` as a reader would type them; `ID` stands for the first
/// pending proposal. Returns what each hypod command printed.
fn run_block(page: &Page, block: &Block, dir: &Path) -> Result<Vec<(Vec<String>, String)>, String> {
    let mut cwd = dir.to_path_buf();
    let mut printed = Vec::new();
    for (line, words) in shell_commands(&block.lines) {
        let at = format!("{}:{line}", page.name);
        match invocation(&words) {
            Invocation::Cd(to) => {
                cwd = cwd.join(to);
                if !cwd.is_dir() {
                    return Err(format!("{at}: `cd`: {} does not exist", cwd.display()));
                }
            }
            Invocation::Hypod(mut args) => {
                if args.iter().any(|a| a == "ID") {
                    let list = hypod_in(
                        &cwd,
                        &["queue", "list", "--status", "pending_review", "--json"]
                            .map(String::from),
                    );
                    let listed: serde_json::Value = serde_json::from_slice(&list.stdout)
                        .map_err(|e| format!("{at}: `queue list --json` is not JSON: {e}"))?;
                    // A proposal one approval decides (an escalated one needs a second, from
                    // the governance role).
                    let id = listed
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|p| p["approvals_required"] == 1)
                        .and_then(|p| p["id"].as_str())
                        .ok_or_else(|| format!("{at}: no pending proposal to stand for ID"))?
                        .to_string();
                    for arg in args.iter_mut().filter(|a| *a == "ID") {
                        *arg = id.clone();
                    }
                }
                let output = hypod_in(&cwd, &args);
                let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
                if !output.status.success() {
                    return Err(format!(
                        "{at}: `hypod {}` exited with {:?}: {}",
                        args.join(" "),
                        output.status.code(),
                        String::from_utf8_lossy(&output.stderr)
                    ));
                }
                printed.push((args, stdout));
            }
            Invocation::Cargo(_) | Invocation::Other => {
                return Err(format!(
                    "{at}: a block marked to run may hold only hypod and cd: `{}`",
                    words.join(" ")
                ));
            }
        }
    }
    Ok(printed)
}

#[test]
fn every_hypod_command_in_the_docs_parses() {
    let (checked, problems) = command_problems(&pages());
    eprintln!("docs: {checked} hypod commands checked against the parser");
    assert!(
        checked > 50,
        "only {checked} commands found: is the extraction broken?"
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_cargo_test_and_bench_in_the_docs_names_a_real_target() {
    let (checked, problems) = cargo_problems(&pages());
    eprintln!("docs: {checked} cargo test/bench commands checked");
    assert!(checked > 10, "only {checked} cargo commands found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_toml_block_in_the_docs_loads() {
    let (checked, keys, problems) = toml_problems(&pages());
    eprintln!("docs: {checked} toml blocks loaded ({keys} key lines in configuration blocks)");
    assert!(checked > 8, "only {checked} toml blocks found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_configuration_key_the_docs_name_exists() {
    let (checked, problems) = key_problems(&pages());
    eprintln!("docs: {checked} distinct configuration keys checked");
    assert!(checked > 20, "only {checked} keys found");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_starter_configuration_loads() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("examples/hypod.toml")).expect("read");
    load_config(&text).expect("examples/hypod.toml loads");
}

#[test]
fn every_link_and_path_in_the_docs_resolves() {
    let (checked, problems) = link_problems(&pages());
    eprintln!("docs: {checked} links and paths checked");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_readme_is_a_short_page() {
    let size = std::fs::metadata(Path::new(ROOT).join("README.md"))
        .expect("README")
        .len();
    assert!(
        size <= 8 * 1024,
        "README.md is {size} bytes; keep it under 8 KB and move the rest to docs/"
    );
}

/// The README's test command is the one CI runs.
#[test]
fn the_readme_test_command_is_what_ci_runs() {
    let ci = std::fs::read_to_string(Path::new(ROOT).join(".ci/run")).expect(".ci/run");
    let readme = pages().into_iter().next().expect("README");
    let block = blocks(&readme)
        .into_iter()
        .find(|b| {
            b.lines
                .iter()
                .any(|(_, l)| l.trim_start().starts_with("cargo test"))
        })
        .expect("a cargo test block in the README");
    for (_, line) in &block.lines {
        let command = line.trim();
        assert!(
            ci.lines()
                .any(|l| l.trim_end().ends_with(&format!("; {command}")) || l.trim() == command),
            "README.md runs `{command}`, .ci/run does not"
        );
    }
}

/// The blocks marked to run (the README's walk, the demo) run in a fresh folder, and the
/// commands the demo suggests parse.
#[test]
fn the_blocks_marked_to_run_run() {
    let mut ran = 0;
    for page in pages() {
        for block in blocks(&page).into_iter().filter(|b| b.run) {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::create_dir(dir.path().join("examples")).expect("examples/");
            std::fs::copy(
                Path::new(ROOT).join("examples/sample-history.ndjson"),
                dir.path().join("examples/sample-history.ndjson"),
            )
            .expect("copy the sample");
            let printed = run_block(&page, &block, dir.path()).unwrap_or_else(|e| panic!("{e}"));
            ran += 1;
            for (args, stdout) in printed {
                match args.first().map(String::as_str) {
                    Some("demo") => {
                        // Its suggestions are indented under "What to try next".
                        let suggested: Vec<&str> = stdout
                            .lines()
                            .filter(|l| l.starts_with("  hypod "))
                            .map(str::trim)
                            .collect();
                        assert!(
                            !suggested.is_empty(),
                            "the demo suggests nothing:\n{stdout}"
                        );
                        for line in suggested {
                            let commands = split_shell(line);
                            if let Invocation::Hypod(args) = invocation(&commands[0]) {
                                parse(&args).unwrap_or_else(|e| {
                                    panic!("the demo suggests `{line}`: {}", first_line(&e))
                                });
                            }
                        }
                    }
                    Some("export") => assert!(
                        stdout.lines().any(|l| l.contains("\"proposal_id\"")),
                        "{}:{}: the walk exports nothing: {stdout}",
                        page.name,
                        block.line
                    ),
                    _ => {}
                }
            }
        }
    }
    assert!(ran >= 2, "only {ran} blocks are marked to run");
}

/// The checks above catch a page that names what hypod does not have.
#[test]
fn the_checks_catch_drift() {
    let drifted = page(
        "docs/drifted.md",
        "# Drifted\n\n```sh\nhypod frobnicate\nhypod run --fast\n```\n\n\
         Run `hypod queue list --colour` or `hypod export --format mlflow`.\n\n\
         ```toml\n[proposer]\nmax_proposal = 3\n```\n\n\
         | `proposer.max_drafts` | `8` |\n\nSet `HYPOD_LLM__MODEL_NAME`.\n\n\
         `cargo test --test cli nothing_here::` and `cargo bench --bench nothing`.\n\n\
         See [the model](model.md#no-such-heading) and [gone](gone.md), or `src/gone.rs`.\n",
    );
    let pages = [drifted];
    let (_, commands) = command_problems(&pages);
    for needle in ["frobnicate", "--fast", "--colour", "mlflow"] {
        assert!(
            commands.iter().any(|p| p.contains(needle)),
            "{needle} not caught: {commands:?}"
        );
    }
    let (_, _, tomls) = toml_problems(&pages);
    assert!(
        tomls.iter().any(|p| p.contains("max_proposal")),
        "{tomls:?}"
    );
    let (_, keys) = key_problems(&pages);
    for needle in ["proposer.max_drafts", "HYPOD_LLM__MODEL_NAME"] {
        assert!(
            keys.iter().any(|p| p.contains(needle)),
            "{needle} not caught: {keys:?}"
        );
    }
    let (_, cargo) = cargo_problems(&pages);
    for needle in ["nothing_here", "bench `nothing`"] {
        assert!(
            cargo.iter().any(|p| p.contains(needle)),
            "{needle} not caught: {cargo:?}"
        );
    }
    let (_, links) = link_problems(&pages);
    for needle in ["#no-such-heading", "gone.md", "src/gone.rs"] {
        assert!(
            links.iter().any(|p| p.contains(needle)),
            "{needle} not caught: {links:?}"
        );
    }
    // And it names the page and the line.
    assert!(
        commands.iter().any(|p| p.starts_with("docs/drifted.md:4:")),
        "{commands:?}"
    );
}
