//! Reading what the model said. Two layers, both untrusting:
//!
//! - [`ChatResponse`]: the chat-completion envelope, read leniently (async-openai's typed
//!   response requires `created` and `object`, which some compatible servers omit; extra fields
//!   such as llama.cpp's `timings` are ignored). Only the choice's content, refusal and
//!   finish reason, the model name and the token usage are taken from it.
//! - [`parse_answer`] and [`check_item`]: the content, parsed strictly. The answer must be the
//!   object `{"proposals": [...]}` and nothing else; every draft must deserialize into
//!   [`ProposalDraft`] (unknown fields such as `"status"` are errors, never ignored) and pass
//!   `validate::check_draft` (cited experiments exist, segment and signals are in the catalog,
//!   numbers in range, texts bounded).

use crate::proposer::{ProposalDraft, RejectedDraft};
use crate::validate::{check_draft, References};
use serde::Deserialize;
use serde_json::Value;

/// The largest single draft, serialized, that is worth reading.
pub const MAX_DRAFT_BYTES: usize = 64 * 1024;
/// Bounds of the copy of an invalid draft kept in the run record.
const KEPT_STRING_CHARS: usize = 400;
const KEPT_ARRAY_ITEMS: usize = 12;
const KEPT_OBJECT_KEYS: usize = 40;
const KEPT_DEPTH: usize = 5;

/// The chat-completion envelope, every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChatResponse {
    pub model: Option<String>,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Choice {
    pub finish_reason: Option<String>,
    pub message: Option<ChoiceMessage>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChoiceMessage {
    /// A string, or (some servers) a list of `{"type": "text", "text": ...}` parts.
    pub content: Option<Value>,
    pub refusal: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub prompt_tokens: Option<Value>,
    pub completion_tokens: Option<Value>,
}

fn count(value: &Option<Value>) -> Option<u64> {
    match value {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

impl Usage {
    pub fn prompt(&self) -> Option<u64> {
        count(&self.prompt_tokens)
    }

    pub fn completion(&self) -> Option<u64> {
        count(&self.completion_tokens)
    }
}

/// What the first choice of a response amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Text to parse.
    Content(String),
    /// The model declined (a `refusal`, or `finish_reason = content_filter`).
    Refusal(String),
    /// Cut off at the output limit (`finish_reason = length`); the text is partial.
    Truncated(String),
    /// Nothing usable (no choice, no content, a tool call).
    Empty(String),
}

impl ChatResponse {
    /// Reads the envelope from the response body.
    pub fn from_value(value: Value) -> Result<ChatResponse, String> {
        serde_json::from_value(value)
            .map_err(|e| format!("the response is not a chat completion: {e}"))
    }

    pub fn reply(&self) -> Reply {
        let Some(choice) = self.choices.first() else {
            return Reply::Empty("the response has no choices".into());
        };
        let message = choice.message.clone().unwrap_or_default();
        if let Some(refusal) = message.refusal.filter(|r| !r.trim().is_empty()) {
            return Reply::Refusal(refusal);
        }
        let finish = choice.finish_reason.as_deref().unwrap_or("");
        let content = match &message.content {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        match finish {
            "length" => Reply::Truncated(content),
            "content_filter" => {
                Reply::Refusal("the server's content filter stopped the answer".into())
            }
            "tool_calls" | "function_call" => {
                Reply::Empty("the model called a tool instead of answering".into())
            }
            _ if content.trim().is_empty() => Reply::Empty(format!(
                "the answer is empty (finish_reason = {:?})",
                choice.finish_reason.as_deref().unwrap_or("none")
            )),
            _ => Reply::Content(content),
        }
    }
}

/// Strips one surrounding markdown code fence (```json ... ```), which some models add in JSON
/// mode; the content inside is then parsed as strictly as any other.
fn strip_fence(text: &str) -> &str {
    let trimmed = text.trim();
    let Some(rest) = trimmed.strip_prefix("```") else {
        return trimmed;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// Parses the content as `{"proposals": [...]}`; an error says what is wrong, for a re-ask.
pub fn parse_answer(content: &str) -> Result<Vec<Value>, String> {
    let text = strip_fence(content);
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "the answer is not valid JSON ({e}){}",
            near(text, e.line(), e.column())
        )
    })?;
    match value {
        Value::Object(mut object) => {
            let extra: Vec<String> = object
                .keys()
                .filter(|k| *k != "proposals")
                .map(|k| format!("{:?}", crate::proposer::openai::transport::snippet(k, 40)))
                .collect();
            if !extra.is_empty() {
                return Err(format!(
                    "the answer object may only have the key \"proposals\"; it also has {}",
                    extra.join(", ")
                ));
            }
            match object.remove("proposals") {
                Some(Value::Array(items)) => Ok(items),
                Some(other) => Err(format!(
                    "\"proposals\" must be a list of proposal objects, not {}",
                    kind(&other)
                )),
                None => Err("the answer must be an object {\"proposals\": [...]}; the key \"proposals\" is missing".into()),
            }
        }
        other => Err(format!(
            "the answer must be an object {{\"proposals\": [...]}}, not {}",
            kind(&other)
        )),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A few characters around a parse error's position.
fn near(text: &str, line: usize, column: usize) -> String {
    let Some(line_text) = text.lines().nth(line.saturating_sub(1)) else {
        return String::new();
    };
    let chars: Vec<char> = line_text.chars().collect();
    let at = column.saturating_sub(1).min(chars.len());
    let from = at.saturating_sub(40);
    let to = (at + 20).min(chars.len());
    let excerpt: String = chars[from..to].iter().collect();
    if excerpt.trim().is_empty() {
        String::new()
    } else {
        format!(" near {excerpt:?}")
    }
}

/// Checks one item of the list: strict deserialization, then the reference and range checks.
/// `Err` carries every reason, each naming the field.
pub fn check_item(item: &Value, refs: &References<'_>) -> Result<ProposalDraft, Vec<String>> {
    let size = item.to_string().len();
    if size > MAX_DRAFT_BYTES {
        return Err(vec![format!(
            "the proposal is {size} bytes long; the limit is {MAX_DRAFT_BYTES}: keep every text short"
        )]);
    }
    if !item.is_object() {
        return Err(vec![format!(
            "each proposal must be an object, not {}",
            kind(item)
        )]);
    }
    let draft: ProposalDraft = serde_path_to_error::deserialize(item).map_err(|err| {
        let path = err.path().to_string();
        let message = crate::proposer::openai::transport::snippet(&err.inner().to_string(), 400);
        vec![if path == "." || path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        }]
    })?;
    let problems = check_draft(&draft, refs);
    if problems.is_empty() {
        Ok(draft)
    } else {
        Err(problems.iter().map(ToString::to_string).collect())
    }
}

/// A bounded copy of an untrusted value, for the run record.
pub fn bounded_copy(value: &Value) -> Value {
    fn copy(value: &Value, depth: usize) -> Value {
        if depth >= KEPT_DEPTH {
            return Value::String("…".into());
        }
        match value {
            Value::String(s) => Value::String(crate::proposer::openai::transport::snippet(
                s,
                KEPT_STRING_CHARS,
            )),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .take(KEPT_ARRAY_ITEMS)
                    .map(|v| copy(v, depth + 1))
                    .collect(),
            ),
            Value::Object(object) => Value::Object(
                object
                    .iter()
                    .take(KEPT_OBJECT_KEYS)
                    .map(|(k, v)| {
                        (
                            crate::proposer::openai::transport::snippet(k, 64),
                            copy(v, depth + 1),
                        )
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    copy(value, 0)
}

/// Reasons a run record keeps for one invalid draft, at most; then how many more there were.
const KEPT_REASONS: usize = 20;
/// Characters kept of one reason.
const KEPT_REASON_CHARS: usize = 500;

/// An invalid draft, with its reasons, as the run records it: both bounded, whatever the draft
/// (a model's or an agent's) made of them.
pub fn rejected(raw: &Value, reasons: Vec<String>) -> RejectedDraft {
    let more = reasons.len().saturating_sub(KEPT_REASONS);
    let mut kept: Vec<String> = reasons
        .iter()
        .take(KEPT_REASONS)
        .map(|r| crate::proposer::openai::transport::snippet(r, KEPT_REASON_CHARS))
        .collect();
    if more > 0 {
        kept.push(format!("… and {more} more"));
    }
    RejectedDraft {
        raw: bounded_copy(raw),
        reasons: kept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_is_read_leniently() {
        let response = ChatResponse::from_value(json!({
            "choices": [{"index": 0, "finish_reason": "", "message": {"role": "assistant", "content": "{\"proposals\":[]}"}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3.0, "prompt_tokens_details": {"cached_tokens": 0}},
            "timings": {"prompt_ms": 1.0}
        }))
        .unwrap();
        assert_eq!(
            response.reply(),
            Reply::Content("{\"proposals\":[]}".into())
        );
        let usage = response.usage.unwrap();
        assert_eq!((usage.prompt(), usage.completion()), (Some(10), Some(3)));
    }

    #[test]
    fn replies_are_classified() {
        let reply = |choice: Value| {
            ChatResponse::from_value(json!({"choices": [choice]}))
                .unwrap()
                .reply()
        };
        assert!(matches!(
            reply(json!({"finish_reason": "stop", "message": {"content": null, "refusal": "I can't help with that"}})),
            Reply::Refusal(r) if r.contains("can't")
        ));
        assert!(matches!(
            reply(
                json!({"finish_reason": "length", "message": {"content": "{\"proposals\": [{\"evid"}})
            ),
            Reply::Truncated(_)
        ));
        assert!(matches!(
            reply(json!({"finish_reason": "content_filter", "message": {"content": ""}})),
            Reply::Refusal(_)
        ));
        assert!(matches!(
            reply(json!({"finish_reason": "stop", "message": {"content": "  "}})),
            Reply::Empty(_)
        ));
        assert!(matches!(
            ChatResponse::from_value(json!({"choices": []}))
                .unwrap()
                .reply(),
            Reply::Empty(_)
        ));
        assert!(matches!(
            reply(json!({"finish_reason": "stop", "message": {"content": [{"type": "text", "text": "{}"}]}})),
            Reply::Content(c) if c == "{}"
        ));
    }

    #[test]
    fn answers_are_parsed_strictly() {
        assert_eq!(parse_answer("{\"proposals\": []}").unwrap().len(), 0);
        assert_eq!(
            parse_answer("```json\n{\"proposals\": [{}]}\n```")
                .unwrap()
                .len(),
            1
        );
        let err = parse_answer("{\"proposals\": [}").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(parse_answer("[]").unwrap_err().contains("not a list"));
        assert!(parse_answer("{\"proposals\": {}}")
            .unwrap_err()
            .contains("must be a list"));
        assert!(
            parse_answer("{\"proposals\": [], \"status\": \"approved\"}")
                .unwrap_err()
                .contains("\"status\"")
        );
        assert!(parse_answer("{}").unwrap_err().contains("missing"));
    }

    #[test]
    fn kept_copies_are_bounded() {
        let huge = json!({"title": "x".repeat(100_000), "list": (0..1000).collect::<Vec<_>>()});
        let kept = bounded_copy(&huge);
        assert!(kept.to_string().len() < 2_000);
    }
}
