//! Who a person is, and what text a person may leave: the one normalised form of a name (so
//! that `Alice`, ` alice ` and a full-width `ａｌｉｃｅ` are one person and cannot approve twice),
//! compared by its Unicode TR 39 confusable skeleton (so that `scope` and a Cyrillic `ѕсоре`
//! are one person too) and refused when it mixes scripts (a Latin `rob` with a Cyrillic `о`);
//! the bounds on notes and reasons (no control characters, no bidirectional overrides, a reason
//! that says something visible); and [`echo`], the bounded quotation of user input in messages.
//! Every name, note and reason passes here before it is stored, whether it comes from the
//! command line, a token, a proxy header or an HTTP body.

use serde::{Serialize, Serializer};
use unicode_normalization::UnicodeNormalization;
use unicode_security::mixed_script::AugmentedScriptSet;

/// The longest name, in characters, after normalisation.
pub const MAX_NAME_CHARS: usize = 64;
/// The longest note or reason, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("the {what} must not be empty")]
    Empty { what: &'static str },
    #[error("the {what} is {chars} characters long; at most {max} are allowed")]
    TooLong {
        what: &'static str,
        chars: usize,
        max: usize,
    },
    #[error("the {what} contains the control or invisible character {code} at character {position}; type it without")]
    Forbidden {
        what: &'static str,
        code: String,
        position: usize,
    },
    #[error("the {what} has no visible character")]
    Invisible { what: &'static str },
    #[error("the {what} mixes scripts: {character:?} ({code}, {script}) at character {position} among {others} letters; write the name in one script, so that look-alike letters cannot pass for another person")]
    MixedScript {
        what: &'static str,
        character: char,
        code: String,
        script: String,
        position: usize,
        others: String,
    },
}

/// A person's identity: NFKC-normalised, lower-cased, trimmed, inner whitespace collapsed to
/// one space; never empty, at most [`MAX_NAME_CHARS`], without control or invisible
/// characters, written in one script. Two spellings of one name give the same identity.
///
/// The name is kept as typed (after that normalisation) for display and storage; two
/// identities are EQUAL when their TR 39 confusable skeletons are: `scope` and the all-Cyrillic
/// `ѕсоре` are one person for "nobody approves twice". Equality, ordering and hashing all use
/// the skeleton, so every comparison of people agrees with the review rule.
#[derive(Debug, Clone)]
pub struct Identity {
    name: String,
    skeleton: String,
}

impl PartialEq for Identity {
    fn eq(&self, other: &Identity) -> bool {
        self.skeleton == other.skeleton
    }
}

impl Eq for Identity {}

impl std::hash::Hash for Identity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.skeleton.hash(state);
    }
}

impl PartialOrd for Identity {
    fn partial_cmp(&self, other: &Identity) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Identity {
    fn cmp(&self, other: &Identity) -> std::cmp::Ordering {
        self.skeleton.cmp(&other.skeleton)
    }
}

impl Serialize for Identity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl Identity {
    /// A name given now (a flag, a header, a token being created): normalised, checked, and
    /// refused when it mixes scripts.
    pub fn parse(raw: &str) -> Result<Identity, TextError> {
        let identity = Identity::of_record(raw)?;
        single_script(&identity.name)?;
        Ok(identity)
    }

    /// A name already stored (a review's actor, a token's user): normalised and checked as
    /// [`Identity::parse`] does, but not refused for mixing scripts — a row written before that
    /// rule still compares by its skeleton, so it cannot count as a second person.
    pub fn of_record(raw: &str) -> Result<Identity, TextError> {
        const WHAT: &str = "user name";
        if raw.chars().count() > MAX_NAME_CHARS * 4 {
            return Err(TextError::TooLong {
                what: WHAT,
                chars: raw.chars().count(),
                max: MAX_NAME_CHARS,
            });
        }
        let folded: String = raw.nfkc().flat_map(char::to_lowercase).collect::<String>();
        // Lower-casing can produce decomposed forms again: normalise once more.
        let folded: String = folded.nfkc().collect();
        for (position, c) in folded.chars().enumerate() {
            if forbidden(c) || invisible(c) {
                return Err(TextError::Forbidden {
                    what: WHAT,
                    code: code(c),
                    position: position + 1,
                });
            }
        }
        let name = folded.split_whitespace().collect::<Vec<_>>().join(" ");
        if name.is_empty() {
            return Err(TextError::Empty { what: WHAT });
        }
        let chars = name.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(TextError::TooLong {
                what: WHAT,
                chars,
                max: MAX_NAME_CHARS,
            });
        }
        // The skeleton of the lower-cased name: confusables lower-case to confusables.
        let skeleton: String = unicode_security::skeleton(&name).collect();
        Ok(Identity { name, skeleton })
    }

    /// The name as given (normalised): what is shown and stored.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The TR 39 confusable skeleton the comparisons use; never shown.
    pub fn skeleton(&self) -> &str {
        &self.skeleton
    }
}

/// Refuses a name whose letters come from more than one script (TR 39's resolved script set is
/// empty): digits, punctuation and marks go with any script; Han with Hiragana and Katakana is
/// Japanese, with Hangul Korean.
fn single_script(name: &str) -> Result<(), TextError> {
    let mut set = AugmentedScriptSet::default();
    for (position, c) in name.chars().enumerate() {
        let before = set;
        set.intersect_with(AugmentedScriptSet::for_char(c));
        if set.is_empty() {
            return Err(TextError::MixedScript {
                what: "user name",
                character: c,
                code: code(c),
                script: AugmentedScriptSet::for_char(c).to_string(),
                position: position + 1,
                others: if before.is_all() {
                    "common".to_string()
                } else {
                    before.to_string()
                },
            });
        }
    }
    Ok(())
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// How many characters of a user's input an error message quotes.
pub const ECHO_CHARS: usize = 64;

/// User input shown in a message as it is (an id), bounded: the whole of it when at most
/// [`ECHO_CHARS`] characters, else its first [`ECHO_CHARS`] and `… (N characters)`.
pub fn bounded(input: &str) -> std::borrow::Cow<'_, str> {
    let chars = input.chars().count();
    if chars <= ECHO_CHARS {
        std::borrow::Cow::Borrowed(input)
    } else {
        let head: String = input.chars().take(ECHO_CHARS).collect();
        std::borrow::Cow::Owned(format!("{head}… ({chars} characters)"))
    }
}

/// User input quoted in a message, bounded: the whole of it (as a Rust/JSON-style quoted
/// string) when at most [`ECHO_CHARS`] characters, else its first [`ECHO_CHARS`] and
/// `… (N characters)` — a 100 000-character `--as` is not echoed back whole.
pub fn echo(input: &str) -> String {
    let chars = input.chars().count();
    if chars <= ECHO_CHARS {
        format!("{input:?}")
    } else {
        let head: String = input.chars().take(ECHO_CHARS).collect();
        format!("{head:?}… ({chars} characters)")
    }
}

/// Checks a note, comment or reason: trimmed, at most [`MAX_NOTE_CHARS`], no control
/// character but the line feed and tab, no bidirectional override, and (when `required`) at
/// least one visible character. Returns the trimmed text, `None` for an absent optional one.
pub fn note(
    what: &'static str,
    raw: Option<&str>,
    required: bool,
) -> Result<Option<String>, TextError> {
    let text = raw.map(str::trim).unwrap_or("");
    if text.is_empty() {
        return if required {
            Err(TextError::Empty { what })
        } else {
            Ok(None)
        };
    }
    let chars = text.chars().count();
    if chars > MAX_NOTE_CHARS {
        return Err(TextError::TooLong {
            what,
            chars,
            max: MAX_NOTE_CHARS,
        });
    }
    for (position, c) in text.chars().enumerate() {
        if (forbidden(c) && c != '\n' && c != '\t') || bidi(c) {
            return Err(TextError::Forbidden {
                what,
                code: code(c),
                position: position + 1,
            });
        }
    }
    if !text.chars().any(|c| !c.is_whitespace() && !invisible(c)) {
        return Err(TextError::Invisible { what });
    }
    Ok(Some(text.to_string()))
}

/// Control characters (C0, DEL, C1), line and paragraph separators.
fn forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Bidirectional embeddings, overrides and isolates: they reorder what a reader sees.
fn bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters that print as nothing: zero-width spaces and joiners, soft hyphen, word joiner,
/// invisible operators, variation selectors, the byte-order mark, Hangul fillers, tags, and
/// the bidirectional controls.
fn invisible(c: char) -> bool {
    bidi(c)
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2065}'
            | '\u{206A}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}')
}

fn code(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// Text from storage made safe for a terminal: every control, bidirectional or invisible
/// character is shown as `\u{…}` (a line feed stays a line feed when `keep_newlines`).
pub fn escape_for_terminal(text: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| (forbidden(c) && !(keep_newlines && c == '\n')) || invisible(c);
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_name_are_one_identity() {
        let alice = Identity::parse("alice").unwrap();
        for variant in ["Alice", " alice ", "ALICE", "ａｌｉｃｅ", "Alice\u{00A0}"] {
            assert_eq!(Identity::parse(variant).as_ref(), Ok(&alice), "{variant:?}");
        }
        assert_eq!(
            Identity::parse("  Ada   Lovelace ").unwrap().as_str(),
            "ada lovelace"
        );
        // Composed and decomposed accents are one name.
        assert_eq!(
            Identity::parse("Jose\u{0301}"),
            Identity::parse("Jos\u{00E9}")
        );
    }

    #[test]
    fn names_with_hidden_characters_or_no_length_limit_are_refused() {
        for raw in [
            "bob\u{200B}",
            "bob\r",
            "\u{1b}[2Jbob",
            "bo\u{202E}b",
            "b\u{FEFF}ob",
        ] {
            assert!(
                matches!(Identity::parse(raw), Err(TextError::Forbidden { .. })),
                "{raw:?}"
            );
        }
        assert_eq!(
            Identity::parse("   "),
            Err(TextError::Empty { what: "user name" })
        );
        assert!(matches!(
            Identity::parse(&"a".repeat(100_000)),
            Err(TextError::TooLong { .. })
        ));
        assert!(matches!(
            Identity::parse(&"a".repeat(65)),
            Err(TextError::TooLong { chars: 65, .. })
        ));
    }

    #[test]
    fn look_alike_names_are_one_person_and_mixed_scripts_are_refused() {
        // A Latin name and its all-Cyrillic look-alike (ѕ с о р е): one person.
        let latin = Identity::parse("scope").unwrap();
        let cyrillic = Identity::parse("\u{0455}\u{0441}\u{043E}\u{0440}\u{0435}").unwrap();
        assert_eq!(latin, cyrillic);
        assert_eq!(
            cyrillic.as_str(),
            "\u{0455}\u{0441}\u{043E}\u{0440}\u{0435}"
        );
        // A Cyrillic о or a Greek ο inside a Latin name: refused, naming the letter.
        for (raw, script) in [("r\u{043E}b", "Cyrillic"), ("r\u{03BF}b", "Greek")] {
            match Identity::parse(raw) {
                Err(TextError::MixedScript {
                    script: s,
                    position: 2,
                    others,
                    ..
                }) => {
                    assert_eq!((s.as_str(), others.as_str()), (script, "Latin"), "{raw:?}");
                }
                other => panic!("{raw:?}: {other:?}"),
            }
            // A stored row with it still folds onto `rob`.
            assert_eq!(Identity::of_record(raw), Identity::parse("rob"), "{raw:?}");
        }
        let message = Identity::parse("r\u{043E}b").unwrap_err().to_string();
        assert!(
            message.contains("mixes scripts") && message.contains("U+043E"),
            "{message}"
        );
        // Accents, digits, punctuation and Japanese are one script each.
        for raw in [
            "jürgen",
            "ada.lovelace@example.com",
            "bob2",
            "山田 たろう",
            "Δημήτρης",
        ] {
            assert!(Identity::parse(raw).is_ok(), "{raw:?}");
        }
        assert_ne!(Identity::parse("jürgen"), Identity::parse("jurgen"));
    }

    #[test]
    fn echoed_input_is_bounded() {
        assert_eq!(echo("ada"), "\"ada\"");
        assert_eq!(bounded("p-1"), "p-1");
        assert!(bounded(&"p".repeat(1000)).ends_with("p… (1000 characters)"));
        let long = echo(&"x".repeat(100_000));
        assert!(long.ends_with("… (100000 characters)"), "{long}");
        assert!(long.chars().count() < 100, "{long}");
    }

    #[test]
    fn a_reason_must_say_something_visible() {
        assert_eq!(
            note("reason", Some("\u{200B}"), true),
            Err(TextError::Invisible { what: "reason" })
        );
        assert_eq!(
            note("reason", Some("  "), true),
            Err(TextError::Empty { what: "reason" })
        );
        assert_eq!(note("note", None, false), Ok(None));
        assert_eq!(
            note("reason", Some(" too risky\nfor Q4 "), true),
            Ok(Some("too risky\nfor Q4".into()))
        );
        assert!(matches!(
            note("reason", Some("APPROVED\r\u{1b}[2J BY CFO"), true),
            Err(TextError::Forbidden { .. })
        ));
        assert!(matches!(
            note("note", Some(&"x".repeat(2001)), false),
            Err(TextError::TooLong { .. })
        ));
    }

    #[test]
    fn terminal_output_shows_control_characters_as_escapes() {
        assert_eq!(
            escape_for_terminal("ok\r\u{1b}[2JAPPROVED", false),
            "ok\\u{000d}\\u{001b}[2JAPPROVED"
        );
        assert_eq!(escape_for_terminal("a\nb", true), "a\nb");
        assert_eq!(escape_for_terminal("a\nb", false), "a\\u{000a}b");
        assert_eq!(escape_for_terminal("plain", false), "plain");
    }
}
