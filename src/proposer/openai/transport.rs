//! The HTTP transport under async-openai: hypod's retry policy, the only one in the stack.
//!
//! async-openai's default client wraps every request in its own retry layer; [`Transport`] is
//! installed with `Client::with_http_service` instead, so that `max_attempts` means what it
//! says. It owns: retrying 408, 409, 429 (except `insufficient_quota`) and 5xx answers, timeouts
//! and connection errors, with exponential backoff and jitter or the server's `Retry-After` /
//! `retry-after-ms`; a bound on the body size; reading error bodies leniently (llama.cpp sends
//! `error.code` as a number, FastAPI servers send `detail`, proxies send HTML); and counting the
//! attempts. A final failure reaches the caller as `OpenAIError::Boxed(TransportFailure)`.

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use rand::Rng;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// The largest response body hypod reads (a proposal list is a few KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How often and how long to wait between attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per model call, at least 1.
    pub max_attempts: u32,
    /// The first backoff; doubled per attempt.
    pub base_delay: Duration,
    /// The longest backoff without `Retry-After`.
    pub max_delay: Duration,
    /// The longest wait a server's `Retry-After` may impose.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn new(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }

    /// The wait before attempt `attempt + 1`: the server's `Retry-After` when it gave one (capped
    /// at `max_retry_after`), else `base_delay · 2^(attempt-1)` capped at `max_delay`, with
    /// "equal jitter" (uniform in the upper half) so that clients do not retry in lockstep.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        let exponent = attempt.saturating_sub(1).min(20);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = full / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rand::rng().random_range(0..=half.as_nanos() as u64))
        };
        half + jitter
    }
}

/// What the attempts of one call came to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransportStats {
    /// HTTP attempts made (including retries).
    pub attempts: u32,
    /// Why each retry happened, e.g. `429 rate limited; waited 1.0 s (Retry-After)`.
    pub retries: Vec<String>,
}

/// Why a call failed after the retry policy gave up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportFailure {
    /// No HTTP answer: connection refused, DNS, TLS, timeout.
    #[error("{message}")]
    Unreachable { attempts: u32, message: String },
    /// The server answered with an error status.
    #[error("{status}: {message}")]
    Status {
        attempts: u32,
        status: u16,
        message: String,
        /// `error.code` as text, whatever its JSON type.
        code: Option<String>,
        /// `error.type`.
        kind: Option<String>,
    },
    /// A success status whose body is not JSON.
    #[error("the server answered {status} with a body that is not JSON: {snippet}")]
    NotJson {
        attempts: u32,
        status: u16,
        snippet: String,
    },
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the server's answer is larger than {limit} bytes")]
    TooLarge { attempts: u32, limit: usize },
    /// The request could not be built.
    #[error("the request could not be built: {0}")]
    Request(String),
}

impl TransportFailure {
    pub fn attempts(&self) -> u32 {
        match self {
            TransportFailure::Unreachable { attempts, .. }
            | TransportFailure::Status { attempts, .. }
            | TransportFailure::NotJson { attempts, .. }
            | TransportFailure::TooLarge { attempts, .. } => *attempts,
            TransportFailure::Request(_) => 0,
        }
    }
}

/// An error body, read leniently.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorBody {
    pub message: String,
    pub code: Option<String>,
    pub kind: Option<String>,
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cuts text for an error message (the char boundary is respected).
pub fn snippet(text: &str, max_chars: usize) -> String {
    crate::shorten(text.trim(), max_chars)
}

/// Reads `{"error": {"message", "code", "type", ...}}` (code of any JSON type), `{"error": "..."}`,
/// `{"message": ...}`, FastAPI's `{"detail": ...}`, or plain text.
pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    let text = String::from_utf8_lossy(body);
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return ErrorBody {
            message: if text.trim().is_empty() {
                "(empty body)".into()
            } else {
                snippet(&text, 300)
            },
            ..ErrorBody::default()
        };
    };
    let mut parsed = ErrorBody::default();
    match value.get("error") {
        Some(Value::Object(error)) => {
            parsed.message = error
                .get("message")
                .map(value_text)
                .unwrap_or_else(|| Value::Object(error.clone()).to_string());
            parsed.code = error.get("code").filter(|c| !c.is_null()).map(value_text);
            parsed.kind = error.get("type").filter(|c| !c.is_null()).map(value_text);
            // llama.cpp's context overflow says how far over it is.
            if let (Some(n_prompt), Some(n_ctx)) =
                (error.get("n_prompt_tokens"), error.get("n_ctx"))
            {
                parsed.message = format!(
                    "{} (the prompt has {n_prompt} tokens, the server's context is {n_ctx}: lower prompt_token_budget or start the server with a larger context)",
                    parsed.message
                );
            }
        }
        Some(other) => parsed.message = value_text(other),
        None => {
            parsed.message = value
                .get("message")
                .or_else(|| value.get("detail"))
                .map(value_text)
                .unwrap_or_else(|| value.to_string());
        }
    }
    parsed.message = snippet(&parsed.message, 600);
    parsed
}

/// Whether an error status is worth another attempt.
pub fn is_retryable(status: u16, body: &ErrorBody) -> bool {
    match status {
        429 => {
            !(body.code.as_deref() == Some("insufficient_quota")
                || body.kind.as_deref() == Some("insufficient_quota"))
        }
        408 | 409 => true,
        s => s >= 500,
    }
}

/// `retry-after-ms` (OpenAI), or `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
        }
    }
    let value = header("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Describes a reqwest error with its causes (connection refused, timed out, ...).
pub fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    let mut message = if error.is_timeout() {
        format!(
            "no answer within timeout_seconds = {}",
            timeout.as_secs_f64()
        )
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    let mut seen = 0;
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
        seen += 1;
        if seen > 4 {
            break;
        }
    }
    if let Some(url) = error.url() {
        let mut url = url.clone();
        url.set_query(None);
        message.push_str(&format!(" ({url})"));
    }
    message
}

enum Attempt {
    Done(reqwest::Response),
    Retry {
        failure: TransportFailure,
        why: String,
        retry_after: Option<Duration>,
    },
    Fail(TransportFailure),
}

/// hypod's tower service: one reqwest client, one retry policy, shared stats for one run.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    policy: RetryPolicy,
    timeout: Duration,
    stats: Arc<Mutex<TransportStats>>,
}

impl Transport {
    pub fn new(
        client: reqwest::Client,
        policy: RetryPolicy,
        timeout: Duration,
        stats: Arc<Mutex<TransportStats>>,
    ) -> Transport {
        Transport {
            client,
            policy,
            timeout,
            stats,
        }
    }

    fn count_attempt(&self) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.attempts += 1;
        }
    }

    fn note_retry(&self, why: String) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.retries.push(why);
        }
    }

    async fn attempt(&self, factory: &HttpRequestFactory, attempt: u32) -> Attempt {
        let request = match factory.build().await {
            Ok(request) => request,
            Err(err) => return Attempt::Fail(TransportFailure::Request(err.to_string())),
        };
        self.count_attempt();
        // A connection error or a broken body: worth another attempt.
        let unreachable = |message: String| Attempt::Retry {
            why: message.clone(),
            failure: TransportFailure::Unreachable {
                attempts: attempt,
                message,
            },
            retry_after: None,
        };
        let response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(err) => {
                return unreachable(describe(&err, self.timeout));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match read_bounded(response).await {
            Ok(body) => body,
            Err(ReadError::TooLarge) => {
                return Attempt::Fail(TransportFailure::TooLarge {
                    attempts: attempt,
                    limit: MAX_BODY_BYTES,
                })
            }
            Err(ReadError::Http(err)) => {
                return unreachable(describe(&err, self.timeout));
            }
        };
        if status.is_success() {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                let failure = TransportFailure::NotJson {
                    attempts: attempt,
                    status: status.as_u16(),
                    snippet: snippet(&String::from_utf8_lossy(&body), 200),
                };
                return Attempt::Retry {
                    why: format!("{} with a body that is not JSON", status.as_u16()),
                    failure,
                    retry_after: None,
                };
            }
            let mut builder = http::Response::builder().status(status);
            for (name, value) in headers.iter() {
                builder = builder.header(name, value);
            }
            return match builder.body(body) {
                Ok(rebuilt) => Attempt::Done(reqwest::Response::from(rebuilt)),
                Err(err) => Attempt::Fail(TransportFailure::Request(err.to_string())),
            };
        }
        let parsed = parse_error_body(&body);
        let failure = TransportFailure::Status {
            attempts: attempt,
            status: status.as_u16(),
            message: parsed.message.clone(),
            code: parsed.code.clone(),
            kind: parsed.kind.clone(),
        };
        if is_retryable(status.as_u16(), &parsed) {
            Attempt::Retry {
                why: format!("{} {}", status.as_u16(), snippet(&parsed.message, 120)),
                failure,
                retry_after: retry_after(&headers),
            }
        } else {
            Attempt::Fail(failure)
        }
    }

    /// Sends the request until it succeeds, fails for good, or the attempts are used up.
    pub async fn send(
        &self,
        factory: HttpRequestFactory,
    ) -> Result<reqwest::Response, TransportFailure> {
        let mut attempt = 1;
        loop {
            match self.attempt(&factory, attempt).await {
                Attempt::Done(response) => return Ok(response),
                Attempt::Fail(failure) => return Err(failure),
                Attempt::Retry {
                    failure,
                    why,
                    retry_after,
                } => {
                    if attempt >= self.policy.max_attempts {
                        return Err(failure);
                    }
                    let wait = self.policy.delay(attempt, retry_after);
                    let how = if retry_after.is_some() {
                        "Retry-After"
                    } else {
                        "backoff"
                    };
                    tracing::warn!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "model call failed, retrying: {why}"
                    );
                    self.note_retry(format!(
                        "attempt {attempt}: {why}; waited {:.1} s ({how})",
                        wait.as_secs_f64()
                    ));
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let transport = self.clone();
        Box::pin(async move {
            transport
                .send(factory)
                .await
                .map_err(|failure| OpenAIError::Boxed(Box::new(failure)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn error_bodies_with_numeric_codes_are_read() {
        let body = br#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error","n_prompt_tokens":40034,"n_ctx":8192}}"#;
        let parsed = parse_error_body(body);
        assert_eq!(parsed.code.as_deref(), Some("400"));
        assert_eq!(parsed.kind.as_deref(), Some("exceed_context_size_error"));
        assert!(parsed.message.contains("40034"), "{}", parsed.message);
        assert!(parsed.message.contains("prompt_token_budget"));
    }

    #[test]
    fn other_error_shapes_are_read() {
        assert_eq!(parse_error_body(br#"{"error":"boom"}"#).message, "boom");
        let fastapi = parse_error_body(
            br#"{"detail":[{"loc":["body","response_format","type"],"msg":"Input should be 'text' or 'json_object'"}]}"#,
        );
        assert!(
            fastapi.message.contains("response_format"),
            "{}",
            fastapi.message
        );
        assert_eq!(
            parse_error_body(b"<html>Bad Gateway</html>").message,
            "<html>Bad Gateway</html>"
        );
        assert_eq!(parse_error_body(b"").message, "(empty body)");
        let openai = parse_error_body(
            br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        );
        assert!(!is_retryable(429, &openai));
        assert!(is_retryable(429, &ErrorBody::default()));
        assert!(is_retryable(503, &ErrorBody::default()));
        assert!(!is_retryable(400, &ErrorBody::default()));
        assert!(!is_retryable(401, &ErrorBody::default()));
    }

    #[test]
    fn retry_after_in_seconds_milliseconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut dated = HeaderMap::new();
        dated.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&dated), Some(Duration::ZERO));
        let mut bad = HeaderMap::new();
        bad.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&bad), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let first = policy.delay(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = policy.delay(2, None);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = policy.delay(10, None);
            assert!(capped >= Duration::from_millis(150) && capped <= Duration::from_millis(300));
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(1)
        );
    }
}
