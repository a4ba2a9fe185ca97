//! The `[llm]` section of `hypod.toml` (see docs/model.md): where the model is, how long to wait
//! for it, how often to retry and re-ask, how big the prompt may get, how the answer is
//! constrained and what it costs. Loaded strictly (an unknown key is an error) and checked once
//! by [`LlmConfig::validate`], whose problems name the key. The API key itself is never in the
//! file: `api_key_env` names the environment variable that holds it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How the answer's shape is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// `response_format = {"type": "json_schema", strict: true}`: the server enforces the schema
    /// (OpenAI, Azure, vLLM, llama.cpp's llama-server, recent Ollama).
    #[default]
    JsonSchema,
    /// `response_format = {"type": "json_object"}` with the schema in the prompt, for servers
    /// that reject `json_schema` (llama-cpp-python, older compatible servers). The answer is
    /// validated exactly as strictly.
    JsonObject,
}

impl StructuredOutput {
    pub fn as_str(self) -> &'static str {
        match self {
            StructuredOutput::JsonSchema => "json_schema",
            StructuredOutput::JsonObject => "json_object",
        }
    }
}

/// What a run does when the model fails entirely (decided by the run, not by the proposer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The run is recorded as failed, with the reason.
    #[default]
    None,
    /// The run uses the builtin proposer and records that it fell back, and why.
    Builtin,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::None => "none",
            Fallback::Builtin => "builtin",
        }
    }
}

/// `[llm]`: the `openai` proposer's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Base URL of an OpenAI-compatible API, up to and including `/v1` (for Azure: the resource
    /// endpoint, e.g. `https://NAME.openai.azure.com`).
    pub base_url: String,
    /// Model name (for Azure: informational; the deployment decides the model).
    pub model: String,
    /// Environment variable holding the API key. Unset or empty: no key is sent (local servers).
    pub api_key_env: String,
    /// Limit for one HTTP request (connect, prompt processing and generation), in seconds.
    pub timeout_seconds: f64,
    /// Transport attempts per model call (1 = no retry); retries 408/409/429/5xx, timeouts and
    /// connection errors with exponential backoff, jitter, and the server's `Retry-After`.
    pub max_attempts: u32,
    /// Re-asks with the validation errors when the answer is unusable or a draft is invalid.
    pub max_repairs: u32,
    /// Upper bound of the prompt, in estimated tokens (see `prompt::estimate_tokens`).
    pub prompt_token_budget: usize,
    pub structured_output: StructuredOutput,
    pub fallback: Fallback,
    /// Price per million prompt tokens, for the run's cost figure.
    pub price_per_million_input: f64,
    /// Price per million completion tokens.
    pub price_per_million_output: f64,
    /// Azure OpenAI: the `api-version` query parameter. Set together with `azure_deployment`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_api_version: Option<String>,
    /// Azure OpenAI: the deployment name (`/openai/deployments/{azure_deployment}/...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_deployment: Option<String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout_seconds: 120.0,
            max_attempts: 3,
            max_repairs: 2,
            prompt_token_budget: 12_000,
            structured_output: StructuredOutput::JsonSchema,
            fallback: Fallback::None,
            price_per_million_input: 0.15,
            price_per_million_output: 0.60,
            azure_api_version: None,
            azure_deployment: None,
        }
    }
}

/// One thing wrong with `[llm]`, named by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfigProblem {
    /// The key, e.g. `llm.timeout_seconds`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for LlmConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The smallest prompt budget that leaves room for instructions, catalog and some evidence.
pub const MIN_PROMPT_TOKEN_BUDGET: usize = 1_500;
pub const MAX_PROMPT_TOKEN_BUDGET: usize = 1_000_000;
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;
pub const MAX_REPAIRS_LIMIT: u32 = 5;

impl LlmConfig {
    /// Every problem with the section; empty when it is usable.
    pub fn problems(&self) -> Vec<LlmConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(LlmConfigProblem {
                key: format!("llm.{key}"),
                message,
            })
        };
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(url) => problem(
                "base_url",
                format!(
                    "{:?} must be an http(s) URL with a host (scheme is {:?})",
                    self.base_url,
                    url.scheme()
                ),
            ),
            Err(err) => problem(
                "base_url",
                format!("{:?} is not a URL: {err}", self.base_url),
            ),
        }
        if self.model.trim().is_empty() {
            problem("model", "must not be empty".into());
        }
        if self.api_key_env.is_empty()
            || !self
                .api_key_env
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            problem(
                "api_key_env",
                format!(
                    "{:?} must name an environment variable (letters, digits, _); the key itself never goes in the file",
                    self.api_key_env
                ),
            );
        }
        if !(self.timeout_seconds.is_finite()
            && self.timeout_seconds > 0.0
            && self.timeout_seconds <= 3_600.0)
        {
            problem(
                "timeout_seconds",
                format!(
                    "{} must be more than 0 and at most 3600",
                    self.timeout_seconds
                ),
            );
        }
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            problem(
                "max_attempts",
                format!(
                    "{} must be between 1 (no retry) and {MAX_ATTEMPTS_LIMIT}",
                    self.max_attempts
                ),
            );
        }
        if self.max_repairs > MAX_REPAIRS_LIMIT {
            problem(
                "max_repairs",
                format!("{} must be at most {MAX_REPAIRS_LIMIT}", self.max_repairs),
            );
        }
        if !(MIN_PROMPT_TOKEN_BUDGET..=MAX_PROMPT_TOKEN_BUDGET).contains(&self.prompt_token_budget)
        {
            problem(
                "prompt_token_budget",
                format!(
                    "{} must be between {MIN_PROMPT_TOKEN_BUDGET} and {MAX_PROMPT_TOKEN_BUDGET}",
                    self.prompt_token_budget
                ),
            );
        }
        for (key, price) in [
            ("price_per_million_input", self.price_per_million_input),
            ("price_per_million_output", self.price_per_million_output),
        ] {
            if !(price.is_finite() && price >= 0.0) {
                problem(key, format!("{price} must be a price of 0 or more"));
            }
        }
        match (&self.azure_api_version, &self.azure_deployment) {
            (Some(_), None) => problem(
                "azure_deployment",
                "must be set together with azure_api_version".into(),
            ),
            (None, Some(_)) => problem(
                "azure_api_version",
                "must be set together with azure_deployment".into(),
            ),
            (Some(version), Some(deployment)) => {
                if version.trim().is_empty() {
                    problem("azure_api_version", "must not be empty".into());
                }
                if deployment.trim().is_empty() || deployment.contains('/') {
                    problem(
                        "azure_deployment",
                        format!("{deployment:?} must be a deployment name"),
                    );
                }
            }
            (None, None) => {}
        }
        problems
    }

    /// `Ok` when the section is usable; otherwise every problem, each naming its key.
    pub fn validate(&self) -> Result<(), Vec<LlmConfigProblem>> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_seconds.clamp(0.001, 3_600.0))
    }

    /// Whether requests go to Azure OpenAI (deployment URL, `api-key` header, `api-version`).
    pub fn is_azure(&self) -> bool {
        self.azure_deployment.is_some()
    }

    /// Whether the server is sent `maxLength`/`maxItems` bounds in the schema. OpenAI and Azure
    /// OpenAI reject them in strict mode; the servers that enforce a schema as a grammar
    /// (llama.cpp, vLLM, Ollama) honour them, which stops a small model that loops inside a
    /// string. A server that rejects them anyway gets the schema without them (see the client).
    pub fn accepts_bounds(&self) -> bool {
        if self.is_azure() {
            return false;
        }
        let host = reqwest::Url::parse(&self.base_url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default();
        !(host == "openai.com" || host.ends_with(".openai.com") || host.ends_with(".azure.com"))
    }

    /// The API key from the environment; `None` when the variable is unset or empty.
    pub fn api_key(&self) -> Option<String> {
        std::env::var(&self.api_key_env)
            .ok()
            .filter(|key| !key.trim().is_empty())
    }

    /// The cost of a number of tokens at the configured prices.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        prompt_tokens as f64 / 1e6 * self.price_per_million_input
            + completion_tokens as f64 / 1e6 * self.price_per_million_output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design_and_are_valid() {
        let config = LlmConfig::default();
        assert_eq!(config.validate(), Ok(()));
        let text = r#"
            base_url = "https://api.openai.com/v1"
            model = "gpt-4o-mini"
            api_key_env = "OPENAI_API_KEY"
            timeout_seconds = 120
            max_attempts = 3
            max_repairs = 2
            prompt_token_budget = 12000
            structured_output = "json_schema"
            fallback = "none"
            price_per_million_input = 0.15
            price_per_million_output = 0.60
        "#;
        let parsed: LlmConfig = toml::from_str(text).unwrap();
        assert_eq!(parsed, config);
    }

    #[test]
    fn unknown_keys_and_values_are_rejected() {
        let err = toml::from_str::<LlmConfig>("modle = \"x\"").unwrap_err();
        assert!(err.to_string().contains("modle"), "{err}");
        let err = toml::from_str::<LlmConfig>("structured_output = \"grammar\"").unwrap_err();
        assert!(err.to_string().contains("json_object"), "{err}");
        let partial: LlmConfig =
            toml::from_str("structured_output = \"json_object\"\nfallback = \"builtin\"").unwrap();
        assert_eq!(partial.structured_output, StructuredOutput::JsonObject);
        assert_eq!(partial.fallback, Fallback::Builtin);
        assert_eq!(partial.model, "gpt-4o-mini");
    }

    #[test]
    fn problems_name_the_key() {
        let config = LlmConfig {
            base_url: "localhost:8080".into(),
            timeout_seconds: 0.0,
            max_attempts: 0,
            prompt_token_budget: 10,
            price_per_million_input: -1.0,
            api_key_env: "sk-123 456".into(),
            azure_deployment: Some("gpt".into()),
            ..LlmConfig::default()
        };
        let keys: Vec<String> = config.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "llm.base_url",
                "llm.api_key_env",
                "llm.timeout_seconds",
                "llm.max_attempts",
                "llm.prompt_token_budget",
                "llm.price_per_million_input",
                "llm.azure_api_version"
            ]
        );
    }

    #[test]
    fn bounds_go_to_grammar_servers_not_to_openai() {
        let with = |url: &str| LlmConfig {
            base_url: url.into(),
            ..LlmConfig::default()
        };
        assert!(!LlmConfig::default().accepts_bounds());
        assert!(!with("https://my-res.openai.azure.com").accepts_bounds());
        assert!(with("http://127.0.0.1:8080/v1").accepts_bounds());
        assert!(with("http://gpu-box:8000/v1").accepts_bounds());
        let azure = LlmConfig {
            azure_deployment: Some("d".into()),
            azure_api_version: Some("2024-10-21".into()),
            ..with("https://proxy.example")
        };
        assert!(!azure.accepts_bounds());
    }

    #[test]
    fn cost_uses_both_prices() {
        let config = LlmConfig::default();
        let cost = config.cost(1_000_000, 500_000);
        assert!((cost - 0.45).abs() < 1e-12, "{cost}");
    }
}
