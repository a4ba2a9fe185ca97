//! Who a person is, and what text a person may leave: the one normalised form of a name (so
//! that `Alice`, ` alice ` and a full-width `ａｌｉｃｅ` are one person and cannot approve twice),
//! and the bounds on notes and reasons (no control characters, no bidirectional overrides, a
//! reason that says something visible). Every name, note and reason passes here before it is
//! stored, whether it comes from the command line, a token, a proxy header or an HTTP body.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

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
}

/// A person's identity: NFKC-normalised, lower-cased, trimmed, inner whitespace collapsed to
/// one space; never empty, at most [`MAX_NAME_CHARS`], without control or invisible
/// characters. Two spellings of one name give the same identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identity(String);

impl Identity {
    pub fn parse(raw: &str) -> Result<Identity, TextError> {
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
        Ok(Identity(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
