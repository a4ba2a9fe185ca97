//! Configuration: `hypod.toml` (see docs/configuration.md) with `HYPOD_SECTION__KEY`
//! environment overrides, validated once at start. Every key has a default that works on a fresh machine; an unknown
//! key or a bad value is an error that names it. Relative paths are resolved against the
//! directory of the configuration file (or the working directory when there is none).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://hypod.db".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedSlot {
    RunOnce,
    Skip,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub cron: String,
    pub timezone: String,
    pub missed: MissedSlot,
    pub max_run_seconds: u64,
    /// Seconds a run's claim on its slot lasts without a heartbeat (renewed every third of
    /// it); after that another process may take the slot over.
    pub lease_seconds: u64,
    /// Whether each scheduled run (and `hypod run`, unless `--no-sync`) first syncs the
    /// `[[source]]`s; nothing to do when there is none.
    pub sync: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            cron: "0 2 * * *".into(),
            timezone: "UTC".into(),
            missed: MissedSlot::RunOnce,
            max_run_seconds: 1800,
            lease_seconds: 30,
            sync: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposerKind {
    Builtin,
    Openai,
}

/// `[program]`: the experimentation program itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramConfig {
    /// The currency value is counted in (`"EUR"`), shown next to every amount; none: amounts
    /// read "value units".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposerConfig {
    pub kind: ProposerKind,
    pub max_proposals: usize,
    pub per_moment: usize,
    /// A proposal pending review longer than this many days is `expired` by the next run
    /// (0: never).
    pub expire_pending_after_days: u32,
    /// The shortest test in days, a multiple of 7 (whole weeks): every expected duration is
    /// rounded up to whole weeks and never below it (0: the days to reach the sample, as is).
    pub min_days: u32,
    /// The longest test the builtin proposer proposes, in days (0, the default: no limit): an
    /// idea whose consented traffic needs longer to reach its sample is dropped, with the days
    /// it needs, and its place goes to the next idea.
    pub max_days: u32,
}

impl Default for ProposerConfig {
    fn default() -> Self {
        ProposerConfig {
            kind: ProposerKind::Builtin,
            max_proposals: 8,
            per_moment: 3,
            expire_pending_after_days: 30,
            min_days: crate::validate::DEFAULT_MIN_DAYS,
            max_days: crate::validate::DEFAULT_MAX_DAYS,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// Two-sided significance level.
    pub alpha: f64,
    /// Power for sample sizes.
    pub power: f64,
    /// Valid concluded experiments needed before hypod proposes anything.
    pub min_decided_experiments: usize,
    /// Days of review decisions proposers are shown.
    pub rejection_lookback_days: u32,
    /// `none` | `holm` | `benjamini_hochberg`: adjustment of A/B/n p-values.
    pub multiple_comparisons: crate::analysis::MultipleComparisons,
    /// `frequentist` | `bayesian`: the engine outcomes are decided with.
    pub engine: crate::analysis::engines::Engine,
    /// `{mean, stddev}`: the Bayesian engine's proper prior on the relative effect (flat when
    /// not set).
    pub prior: Option<crate::analysis::engines::Prior>,
    /// `{tuning = N}`: sequential intervals and p-values for the frequentist engine.
    pub sequential: Option<crate::analysis::engines::Sequential>,
    /// KPIs where a decrease is the win (their chance to win and outcome are flipped).
    pub lower_is_better: Vec<String>,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            alpha: 0.05,
            power: 0.8,
            min_decided_experiments: 20,
            rejection_lookback_days: 90,
            multiple_comparisons: crate::analysis::MultipleComparisons::None,
            engine: crate::analysis::engines::Engine::Frequentist,
            prior: None,
            sequential: None,
            lower_is_better: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceConfig {
    /// Folder of policy files and `catalog.toml`. When the key is not set and `./policies` does
    /// not exist, the policies built into the binary are used; a folder that is named must
    /// exist.
    pub policies: PathBuf,
    pub approvals_required: u32,
    pub escalated_approvals_required: u32,
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            policies: PathBuf::from("policies"),
            approvals_required: 1,
            escalated_approvals_required: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    Token,
    Proxy,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// `token`: `Authorization: Bearer` tokens from `hypod token create` (and a login form
    /// for the web UI); `proxy`: the user and groups from `X-Forwarded-User` /
    /// `X-Forwarded-Groups`, believed only from `trusted_proxies`.
    pub auth: AuthMode,
    /// The address people reach the server at (e.g. `https://hypod.example.com`), for links
    /// in notifications; "" = no links.
    pub public_url: String,
    /// With `auth = "proxy"`: the IP addresses of the reverse proxies whose identity headers
    /// are believed. Requests from anywhere else are 401.
    pub trusted_proxies: Vec<String>,
    /// With `auth = "proxy"`: which group names give which role (the highest one counts).
    pub proxy_groups: ProxyGroups,
    /// How long a bearer token, once checked against the database and the audit log, is
    /// believed without checking again (0 = checked on every request). A revocation made
    /// through this process ends its entry at once; one made elsewhere (`hypod token revoke`
    /// in another process, another replica) takes effect within this many seconds.
    pub token_cache_seconds: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            auth: AuthMode::Token,
            public_url: String::new(),
            trusted_proxies: Vec::new(),
            proxy_groups: ProxyGroups::default(),
            token_cache_seconds: 5,
        }
    }
}

/// Group names (from `X-Forwarded-Groups`) for each role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyGroups {
    pub viewer: Vec<String>,
    pub reviewer: Vec<String>,
    pub governance: Vec<String>,
    pub admin: Vec<String>,
}

impl Default for ProxyGroups {
    fn default() -> Self {
        ProxyGroups {
            viewer: vec!["hypod-viewers".into()],
            reviewer: vec!["hypod-reviewers".into()],
            governance: vec!["hypod-governance".into()],
            admin: vec!["hypod-admins".into()],
        }
    }
}

/// `[mcp]`: what agents may submit over MCP (`hypod mcp`, `/mcp`), per user they act for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// Drafts one user's agents may submit (`submit_draft`) in any minute; 0 = none.
    pub submissions_per_minute: u32,
    /// Drafts one user's agents may submit in any 24 hours; 0 = none.
    pub submissions_per_day: u32,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            submissions_per_minute: 5,
            submissions_per_day: 50,
        }
    }
}

/// `[audit]`: where the audit key comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The environment variable holding the audit key (at least 16 bytes; every replica
    /// the same). Unset on SQLite: a key file beside the database, created on first use.
    pub key_env: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_env: "HYPOD_AUDIT_KEY".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Where `hypod serve` posts a Slack-compatible summary after each run ("" = off).
    pub webhook_url: String,
    /// First retry delay of a failed delivery, doubled each attempt (at most an hour).
    pub retry_seconds: u64,
    /// How long a daemon holds the notifications it is sending (renewed before each send;
    /// a send is given at most half of it), so that another daemon does not send them too.
    pub hold_seconds: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhook_url: String::new(),
            retry_seconds: 30,
            hold_seconds: 60,
        }
    }
}

/// Checks an http(s) address from the configuration: a scheme `http` or `https`, a host, no
/// spaces. The message names `key` and never repeats the address (a webhook's path is a
/// secret).
fn check_http_url(key: &str, url: &str) -> Result<(), String> {
    let example = "such as \"https://hooks.example.com/path\"";
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "key `{key}`: the address contains a space or a control character; write it whole, {example}"
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("key `{key}`: not a valid http(s) address ({e}); write it whole, {example}")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "key `{key}`: the address must start with http:// or https://, {example}"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("key `{key}`: the address names no host, {example}"));
    }
    Ok(())
}

/// `message` with every webhook address written in the configuration `text` (the value of a
/// `webhook_url` line, even one whose quotes are not closed) shown as [`redact_url`] shows it.
fn without_webhook_urls(text: &str, message: &str) -> String {
    let mut message = message.to_string();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim().trim_matches(|c| c == '"' || c == '\'') != "webhook_url" {
            continue;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if value.len() > 8 {
            message = message.replace(value, &redact_url(value));
        }
    }
    message
}

/// An address as it may be shown in logs and messages: its scheme, host and port only (a
/// webhook's path, query and credentials are secrets), e.g. `https://hooks.slack.com/…`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or("");
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}/…", parsed.scheme())
        }
        Err(_) => "(an invalid address)".into(),
    }
}

/// `[export]`: the experimentation platforms approved proposals are written for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `[export.growthbook]`: drafts for GrowthBook's `POST /api/v1/experiments`, and the push.
    pub growthbook: Option<GrowthbookExport>,
}

impl ExportConfig {
    fn is_empty(&self) -> bool {
        self.growthbook.is_none()
    }
}

/// `[export.growthbook]` (docs/configuration.md, DESIGN §12 "Platforms").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowthbookExport {
    /// GrowthBook's API host (`https://api.growthbook.io`); hypod appends `/api/v1/experiments`.
    pub url: String,
    /// The variable holding the API key (sent as `Authorization: Bearer <key>`).
    pub api_key_env: String,
    /// Where the experiment's page is (its URL is `{app_url}/experiment/{id}`); by default
    /// `url` with a leading `api.` host label read as `app.` (GrowthBook Cloud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_url: Option<String>,
    /// The GrowthBook project drafts are created in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The data source; required when metrics are mapped (GrowthBook refuses metrics without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasource_id: Option<String>,
    /// The assignment (exposure) query: GrowthBook requires one.
    pub assignment_query_id: String,
    /// Whether the approval that makes a proposal `approved` queues its push.
    #[serde(default)]
    pub push_on_approval: bool,
    /// KPI (a proposal's `primary_kpi`, `guardrail_kpis`) → GrowthBook metric id; KPIs not
    /// listed are left out of the draft.
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, String>,
    /// hypod user (the approver) → GrowthBook member email or user id, sent as `owner`; a
    /// user not listed leaves `owner` out (GrowthBook refuses an unknown one).
    #[serde(default)]
    pub owners: std::collections::BTreeMap<String, String>,
    /// The first retry of a push answered 429/5xx (or unanswered) comes this many seconds
    /// later, then doubling, at most an hour.
    #[serde(default = "default_push_retry")]
    pub retry_seconds: u64,
    /// How long a push is held by the process posting it (each post is given half of it).
    #[serde(default = "default_push_hold")]
    pub hold_seconds: u64,
}

fn default_push_retry() -> u64 {
    30
}

fn default_push_hold() -> u64 {
    60
}

impl GrowthbookExport {
    /// The experiment page of GrowthBook experiment `id`.
    pub fn experiment_url(&self, id: &str) -> String {
        let base = match &self.app_url {
            Some(app) => app.clone(),
            None => match reqwest::Url::parse(&self.url) {
                Ok(mut parsed) => {
                    if let Some(rest) = parsed.host_str().and_then(|h| h.strip_prefix("api.")) {
                        let host = format!("app.{rest}");
                        let _ = parsed.set_host(Some(&host));
                    }
                    parsed.to_string()
                }
                Err(_) => self.url.clone(),
            },
        };
        format!("{}/experiment/{id}", base.trim_end_matches('/'))
    }

    /// Checks the table at load: every message names the key.
    fn check(&self) -> Result<(), String> {
        let key = |k: &str| format!("export.growthbook.{k}");
        check_http_url(&key("url"), &self.url)?;
        if let Some(app) = &self.app_url {
            check_http_url(&key("app_url"), app)?;
        }
        check_env_name(&key("api_key_env"), &self.api_key_env)?;
        if self.retry_seconds == 0 {
            return Err(format!(
                "key `{}`: must be at least 1",
                key("retry_seconds")
            ));
        }
        if !(3..=3600).contains(&self.hold_seconds) {
            return Err(format!(
                "key `{}`: must be between 3 and 3600",
                key("hold_seconds")
            ));
        }
        if self.assignment_query_id.trim().is_empty() {
            return Err(format!(
                "key `{}`: must name the assignment query (GrowthBook refuses a draft without one)",
                key("assignment_query_id")
            ));
        }
        for (what, value) in [
            ("project", &self.project),
            ("datasource_id", &self.datasource_id),
        ] {
            if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return Err(format!(
                    "key `{}`: must not be empty; remove the key to leave it out",
                    key(what)
                ));
            }
        }
        for (kpi, id) in &self.metrics {
            if id.trim().is_empty() {
                return Err(format!(
                    "key `{}`: must name a GrowthBook metric id",
                    key(&format!("metrics.{kpi}"))
                ));
            }
        }
        if !self.metrics.is_empty() && self.datasource_id.is_none() {
            return Err(format!(
                "key `{}`: required when `export.growthbook.metrics` maps KPIs (GrowthBook refuses metrics without a data source)",
                key("datasource_id")
            ));
        }
        for (user, member) in &self.owners {
            if member.trim().is_empty() {
                return Err(format!(
                    "key `{}`: must be a GrowthBook member's email or user id",
                    key(&format!("owners.{user}"))
                ));
            }
        }
        Ok(())
    }
}

/// Checks that `var` (the value of key `key`) names an environment variable hypod does not
/// read as an override. The value is not repeated in the message: it may be the secret itself.
fn check_env_name(key: &str, var: &str) -> Result<(), String> {
    if var.starts_with(ENV_PREFIX) {
        Err(format!(
            "key `{key}`: {var:?} starts with {ENV_PREFIX}, which hypod reads as configuration overrides; name a variable such as \"GROWTHBOOK_API_KEY\""
        ))
    } else if env_var_name(var) {
        Ok(())
    } else {
        Err(format!(
            "key `{key}`: must be the name of an environment variable (letters, digits and `_`, such as \"GROWTHBOOK_API_KEY\"); the secret itself goes in that variable, never in this file"
        ))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[program]`: how the experimentation program's numbers read.
    pub program: ProgramConfig,
    pub database: DatabaseConfig,
    pub schedule: ScheduleConfig,
    pub proposer: ProposerConfig,
    pub llm: crate::proposer::openai::LlmConfig,
    pub analysis: AnalysisConfig,
    pub governance: GovernanceConfig,
    pub server: ServerConfig,
    pub notify: NotifyConfig,
    pub audit: AuditConfig,
    /// `[mcp]`: caps on what agents submit.
    pub mcp: McpConfig,
    /// `[export]`: where approved proposals go (`[export.growthbook]`).
    #[serde(skip_serializing_if = "ExportConfig::is_empty")]
    pub export: ExportConfig,
    /// The `[[source]]` tables as written; read into [`Config::sources`] when the
    /// configuration loads.
    #[serde(rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub source_tables: Vec<toml::Table>,
    /// The history sources (`[[source]]`), validated.
    #[serde(skip)]
    pub sources: Vec<SourceConfig>,
    /// Where relative paths are resolved from (not a key of the file).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this was read from, if any (not a key of the file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

const ENV_PREFIX: &str = "HYPOD_";
/// Environment variables that are not configuration overrides.
const ENV_NOT_KEYS: [&str; 7] = [
    "HYPOD_AUDIT_KEY",
    "HYPOD_CONFIG",
    "HYPOD_LOG",
    "HYPOD_NOW",
    "HYPOD_TEST_DATABASE_URL",
    "HYPOD_FUZZ_CASES",
    "HYPOD_FUZZ_SEED",
];

impl Config {
    /// How many approvals proposals need (`[governance]`).
    pub fn approval_settings(&self) -> crate::domain::ApprovalSettings {
        crate::domain::ApprovalSettings {
            approvals_required: self.governance.approvals_required,
            escalated_approvals_required: self.governance.escalated_approvals_required,
        }
    }

    /// Loads the configuration: `path` if given (it must exist), else `./hypod.toml` if it
    /// exists, else the defaults; then applies `HYPOD_SECTION__KEY` overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Config::load_with_env(path, &vars)
    }

    /// [`Config::load`] with these environment variables. Its errors never show a password of
    /// a URL (the database's, written in the file or a variable): see [`redact_url_passwords`].
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        Config::load_unredacted(path, env).map_err(|e| match e {
            ConfigError::Invalid { path, message } => ConfigError::Invalid {
                path,
                message: redact_url_passwords(&message),
            },
            ConfigError::Env { var, message } => ConfigError::Env {
                var,
                message: redact_url_passwords(&message),
            },
            read @ ConfigError::Read { .. } => read,
        })
    }

    fn load_unredacted(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let default_path = Path::new("hypod.toml");
        let (file, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                (Some(path.to_path_buf()), text)
            }
            None if default_path.exists() => {
                let text =
                    std::fs::read_to_string(default_path).map_err(|source| ConfigError::Read {
                        path: default_path.display().to_string(),
                        source,
                    })?;
                (Some(default_path.to_path_buf()), text)
            }
            None => (None, String::new()),
        };
        let name = file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".into());
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: name.clone(),
            // The parser quotes the line at fault, which may be the webhook's.
            message: without_webhook_urls(&text, &e.to_string()),
        })?;
        let from_env = apply_env(&mut table, env)?;
        // The fixed clock of reproducible runs: a value that does not parse must not quietly
        // become the real clock.
        if let Some((_, value)) = env.iter().find(|(var, _)| var == "HYPOD_NOW") {
            if chrono::DateTime::parse_from_rfc3339(value.trim()).is_err() {
                return Err(ConfigError::Env {
                    var: "HYPOD_NOW".into(),
                    message: format!(
                        "{value:?} is not an RFC 3339 instant such as 2026-10-15T09:00:00Z"
                    ),
                });
            }
        }
        // A policies folder someone named (in the file or the environment) must exist: a typo
        // must not swap a governance lead's rules for the built-in ones without a word.
        let policies_named = table
            .get("governance")
            .and_then(|g| g.get("policies"))
            .is_some();
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                // A value that came from the environment is the variable's fault, not the file's.
                // (An unknown key is reported at its section, with the key in the message.)
                let inner = e.inner().to_string();
                match from_env.iter().find(|(path, _)| {
                    key.starts_with(path.as_str())
                        || path.rsplit_once('.').is_some_and(|(section, field)| {
                            section == key && inner.contains(&format!("`{field}`"))
                        })
                }) {
                    Some((_, var)) => ConfigError::Env {
                        var: var.clone(),
                        message: format!("key `{key}`: {}", e.inner()),
                    },
                    None => ConfigError::Invalid {
                        path: name.clone(),
                        message: format!("key `{key}`: {}", e.inner()),
                    },
                }
            })?;
        config.base_dir = file
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.source = file;
        config.sources =
            sources_from_tables(&config.source_tables).map_err(|message| ConfigError::Invalid {
                path: name.clone(),
                message,
            })?;
        config.validate().map_err(|message| {
            // Name the variable when the key the message is about was set by one.
            match from_env
                .iter()
                .find(|(path, _)| message.starts_with(&format!("key `{path}`")))
            {
                Some((_, var)) => ConfigError::Env {
                    var: var.clone(),
                    message,
                },
                None => ConfigError::Invalid {
                    path: name.clone(),
                    message,
                },
            }
        })?;
        if policies_named && !config.policies_dir().is_dir() {
            return Err(ConfigError::Invalid {
                path: name,
                message: format!(
                    "key `governance.policies`: the folder {} does not exist; create it (`hypod init` writes the defaults) or remove the key to use the built-in policies",
                    config.policies_dir().display()
                ),
            });
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.database.url.starts_with("sqlite:")
            && (self.database.url.contains(":memory:") || self.database.url.contains("mode=memory"))
        {
            return Err(format!(
                "key `database.url`: {:?} is an in-memory database, which keeps nothing after the command ends; use sqlite://PATH",
                self.database.url
            ));
        }
        check_database_url(&self.database.url)?;
        if self.proposer.max_proposals == 0 || self.proposer.max_proposals > 100 {
            return Err("key `proposer.max_proposals`: must be between 1 and 100".into());
        }
        if self.proposer.per_moment == 0 {
            return Err("key `proposer.per_moment`: must be at least 1".into());
        }
        if let Some(currency) = &self.program.currency {
            let len = currency.chars().count();
            if len == 0 || len > 12 || currency.chars().any(|c| c.is_control()) {
                return Err("key `program.currency`: must be 1 to 12 printable characters, such as \"EUR\" or \"$\"".into());
            }
        }
        if !self.proposer.min_days.is_multiple_of(7) || self.proposer.min_days > 364 {
            return Err("key `proposer.min_days`: must be whole weeks, a multiple of 7 up to 364 (0 turns the minimum and the rounding to weeks off)".into());
        }
        if self.proposer.max_days > 3_650 {
            return Err(
                "key `proposer.max_days`: must be at most 3650 (ten years; 0 turns the limit off)"
                    .into(),
            );
        }
        if self.proposer.max_days != 0 && self.proposer.max_days < self.proposer.min_days {
            return Err(format!(
                "key `proposer.max_days`: {} is below `proposer.min_days` ({}): every test would be too long; raise it or set it to 0 (no limit)",
                self.proposer.max_days, self.proposer.min_days
            ));
        }
        if self.proposer.expire_pending_after_days > 36_500 {
            return Err("key `proposer.expire_pending_after_days`: must be at most 36500 (100 years; 0 turns expiry off)".into());
        }
        if !(self.analysis.alpha > 0.0 && self.analysis.alpha < 0.5) {
            return Err("key `analysis.alpha`: must be in (0, 0.5)".into());
        }
        if !(self.analysis.power > 0.5 && self.analysis.power < 1.0) {
            return Err("key `analysis.power`: must be in (0.5, 1)".into());
        }
        if let Some(prior) = self.analysis.prior {
            if !(prior.mean.is_finite() && prior.mean.abs() <= 100.0) {
                return Err("key `analysis.prior.mean`: must be a relative effect between -100 and 100 (0.05 is +5 %)".into());
            }
            if !(prior.stddev.is_finite() && prior.stddev > 0.0 && prior.stddev <= 100.0) {
                return Err("key `analysis.prior.stddev`: must be in (0, 100] (GrowthBook's default is 0.3)".into());
            }
        }
        if let Some(sequential) = self.analysis.sequential {
            if self.analysis.engine != crate::analysis::engines::Engine::Frequentist {
                return Err("key `analysis.sequential`: sequential testing is part of the frequentist engine; remove it or set analysis.engine = \"frequentist\"".into());
            }
            if !(sequential.tuning.is_finite() && (1.0..=1e12).contains(&sequential.tuning)) {
                return Err("key `analysis.sequential.tuning`: must be a number of visitors from 1 to 10^12 (GrowthBook's default is 5000)".into());
            }
        }
        if self.analysis.lower_is_better.len() > 64
            || self
                .analysis
                .lower_is_better
                .iter()
                .any(|k| k.is_empty() || k.len() > 64 || k.chars().any(|c| c.is_control()))
        {
            return Err("key `analysis.lower_is_better`: must be at most 64 KPI names of 1 to 64 printable characters".into());
        }
        if self.governance.approvals_required == 0 {
            return Err("key `governance.approvals_required`: must be at least 1".into());
        }
        if self.governance.escalated_approvals_required < self.governance.approvals_required {
            return Err("key `governance.escalated_approvals_required`: must be at least approvals_required".into());
        }
        crate::schedule::Schedule::parse(&self.schedule.cron, &self.schedule.timezone)
            .map_err(|e| e.to_string())?;
        if self.schedule.max_run_seconds == 0 {
            return Err("key `schedule.max_run_seconds`: must be at least 1".into());
        }
        if self.mcp.submissions_per_minute > 1000 || self.mcp.submissions_per_day > 100_000 {
            return Err("key `mcp.submissions_per_minute`/`mcp.submissions_per_day`: at most 1000 a minute and 100000 a day".into());
        }
        if !(3..=3600).contains(&self.schedule.lease_seconds) {
            return Err("key `schedule.lease_seconds`: must be between 3 and 3600".into());
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "key `server.listen`: {:?} is not an address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
                self.server.listen
            ));
        }
        if let Err(problems) = self.llm.validate() {
            let listed: Vec<String> = problems
                .iter()
                .map(|p| format!("key `{}`: {}", p.key, p.message))
                .collect();
            return Err(listed.join("; "));
        }
        if !self.notify.webhook_url.is_empty() {
            check_http_url("notify.webhook_url", &self.notify.webhook_url)?;
        }
        if let Some(growthbook) = &self.export.growthbook {
            growthbook.check()?;
        }
        if self.notify.retry_seconds == 0 {
            return Err("key `notify.retry_seconds`: must be at least 1".into());
        }
        if !(3..=3600).contains(&self.notify.hold_seconds) {
            return Err("key `notify.hold_seconds`: must be between 3 and 3600".into());
        }
        for proxy in &self.server.trusted_proxies {
            if proxy.parse::<std::net::IpAddr>().is_err() {
                return Err(format!(
                    "key `server.trusted_proxies`: {proxy:?} is not an IP address such as \"127.0.0.1\""
                ));
            }
        }
        if self.server.token_cache_seconds > 300 {
            return Err("key `server.token_cache_seconds`: must be at most 300 (it is how long a revoked token may still be accepted; 0 checks every request)".into());
        }
        if self.server.auth == AuthMode::Proxy && self.server.trusted_proxies.is_empty() {
            return Err("key `server.trusted_proxies`: auth = \"proxy\" believes identity headers only from listed proxies; list at least one address".into());
        }
        if self.audit.key_env.trim().is_empty() {
            return Err("key `audit.key_env`: must name an environment variable".into());
        }
        if !self.server.public_url.is_empty() {
            check_http_url("server.public_url", &self.server.public_url)?;
        }
        Ok(())
    }

    /// A path from the configuration, resolved against the configuration's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The database URL with a relative SQLite path (`sqlite://h.db` or `sqlite:h.db`) resolved
    /// against the configuration's directory.
    pub fn database_url(&self) -> String {
        let url = &self.database.url;
        if let Some((path, query)) = sqlite_path_and_query(url) {
            if path != ":memory:" && !path.is_empty() && !Path::new(path).is_absolute() {
                let resolved = self.base_dir.join(path);
                return match query {
                    Some(q) => format!("sqlite://{}?{q}", resolved.display()),
                    None => format!("sqlite://{}", resolved.display()),
                };
            }
        }
        url.clone()
    }

    /// The SQLite database file the configuration names, resolved; `None` for PostgreSQL.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        let url = self.database_url();
        let (path, _) = sqlite_path_and_query(&url)?;
        (!path.is_empty()).then(|| PathBuf::from(path))
    }

    pub fn policies_dir(&self) -> PathBuf {
        self.resolve(&self.governance.policies)
    }
}

/// `text` with the password of every URL in it replaced by `***`: the `PASSWORD` of
/// `scheme://USER:PASSWORD@HOST…` and the value of a `password=` query parameter. Every message
/// that shows a database URL (a configuration error, a database that cannot be opened,
/// `hypod migrate`) passes through it; the user, host, port and database stay readable.
pub fn redact_url_passwords(text: &str) -> String {
    // Where a URL's text ends: whitespace, quotes and brackets around it in a message.
    let ends = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("://") {
        let (before, after) = rest.split_at(start + 3);
        out.push_str(before);
        let span_end = after.find(ends).unwrap_or(after.len());
        let span = &after[..span_end];
        // USER:PASSWORD@ — up to the last `@` (a password may hold one unencoded).
        let span = match span.rfind('@') {
            Some(at) if span[..at].contains(':') => {
                let colon = span.find(':').unwrap_or(at);
                out.push_str(&span[..colon]);
                out.push_str(":***");
                &span[at..]
            }
            _ => span,
        };
        out.push_str(&redact_password_parameter(span));
        rest = &after[span_end..];
    }
    out.push_str(&redact_password_parameter(rest));
    out
}

/// `…?password=SECRET&…` with the secret replaced by `***`.
fn redact_password_parameter(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let found = ["?password=", "&password="]
            .iter()
            .filter_map(|key| lower.find(key).map(|i| i + key.len()))
            .min();
        let Some(value_start) = found else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..value_start]);
        out.push_str("***");
        let value = &rest[value_start..];
        let value_end = value
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || matches!(c, '"' | '\''))
            .unwrap_or(value.len());
        rest = &value[value_end..];
    }
}

/// `sqlite://PATH?QUERY` or `sqlite:PATH?QUERY` as (PATH, QUERY).
fn sqlite_path_and_query(url: &str) -> Option<(&str, Option<&str>)> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(
        rest.split_once('?')
            .map_or((rest, None), |(p, q)| (p, Some(q))),
    )
}

/// A database URL must name a backend hypod has and parse as that backend's URL.
fn check_database_url(url: &str) -> Result<(), String> {
    use std::str::FromStr;
    if url.starts_with("sqlite:") {
        let (path, _) = sqlite_path_and_query(url).unwrap_or(("", None));
        if path.is_empty() {
            return Err(format!(
                "key `database.url`: {url:?} names no file; use sqlite://PATH (relative to the configuration file's folder)"
            ));
        }
        sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_err(|e| format!("key `database.url`: {url:?} is not a valid SQLite URL: {e}"))?;
        Ok(())
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| {
            format!("key `database.url`: {url:?} is not a valid PostgreSQL URL: {e}")
        })?;
        Ok(())
    } else {
        Err(format!(
            "key `database.url`: {url:?} is not a sqlite:// or postgres:// URL"
        ))
    }
}

/// Parses an environment override as a whole value of the type the key has (the type of its
/// default): a number is a number and nothing else (`8abc` or `8 # comment` is refused, never
/// cut to 8), a boolean is `true` or `false`, a list is a TOML array, and a string is the value
/// as it is.
fn env_value(raw: &str, default: Option<&toml::Value>) -> Result<toml::Value, String> {
    use std::str::FromStr;
    let trimmed = raw.trim();
    match default {
        Some(toml::Value::Integer(_)) => trimmed
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, found {raw:?}")),
        Some(toml::Value::Float(_)) => match trimmed.parse::<f64>() {
            Ok(number) if number.is_finite() => Ok(toml::Value::Float(number)),
            _ => Err(format!("expected a finite number, found {raw:?}")),
        },
        Some(toml::Value::Boolean(_)) => match trimmed {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, found {raw:?}")),
        },
        Some(toml::Value::Array(_)) => match toml::Value::from_str(trimmed) {
            Ok(value @ toml::Value::Array(_)) => Ok(value),
            _ => Err(format!(
                "expected a TOML array such as [\"a\", \"b\"], found {raw:?}"
            )),
        },
        Some(toml::Value::Table(_)) => Err("is a section, not a value".into()),
        // Strings (and keys without a default, all of them text) are taken as they are.
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}

/// Applies `HYPOD_SECTION__KEY=value` overrides, each parsed as a whole value of its key's
/// type ([`env_value`]). Returns which variable set which key (`section.key`).
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let defaults = match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(defaults)) => defaults,
        _ => toml::Table::new(),
    };
    let mut applied = Vec::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        let Some((section, key)) = rest.split_once("__") else {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "expected HYPOD_SECTION__KEY (two underscores between section and key)"
                    .into(),
            });
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(section_defaults) = defaults.get(&section).and_then(toml::Value::as_table) else {
            let mut sections: Vec<&str> = defaults.keys().map(String::as_str).collect();
            sections.sort_unstable();
            return Err(ConfigError::Env {
                var: var.clone(),
                message: format!(
                    "there is no section `{section}`; the sections are {}",
                    sections.join(", ")
                ),
            });
        };
        let value =
            env_value(raw, section_defaults.get(&key)).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message: format!("key `{section}.{key}`: {message}"),
            })?;
        applied.push((format!("{section}.{key}"), var.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(section_table) => {
                section_table.insert(key, value);
            }
            _ => {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!("`{section}` is not a section"),
                })
            }
        }
    }
    Ok(applied)
}

/// One `[[source]]`: where part of the experiment history lives (docs/sources.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// Unique; a safe identifier, named in provenance, errors and `hypod sync --source`.
    pub name: String,
    /// What a scheduled run does when this source's sync fails.
    pub on_failure: crate::sources::OnFailure,
    pub kind: SourceKind,
}

/// A source's kind, with that kind's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Growthbook(crate::sources::GrowthbookSource),
    Sql(crate::sources::SqlSource),
    File(crate::sources::FileSource),
}

impl SourceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::Growthbook(_) => "growthbook",
            SourceKind::Sql(_) => "sql",
            SourceKind::File(_) => "file",
        }
    }
}

/// Longest accepted source name.
const MAX_SOURCE_NAME: usize = 64;

/// Whether `name` is a safe source name: 1–64 ASCII letters, digits, `_` or `-`, starting
/// with a letter or digit.
fn safe_source_name(name: &str) -> bool {
    name.len() <= MAX_SOURCE_NAME
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `var` can name an environment variable (letters, digits and `_`, not starting with
/// a digit).
fn env_var_name(var: &str) -> bool {
    var.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `[[source]]` tables read and checked: every error names `source[N]` (from 0, in file
/// order), the source's name when it has one, and the key. Values of secrets are never read
/// here: `api_key_env` and `url_env` only name variables.
fn sources_from_tables(tables: &[toml::Table]) -> Result<Vec<SourceConfig>, String> {
    let mut sources: Vec<SourceConfig> = Vec::with_capacity(tables.len());
    for (n, table) in tables.iter().enumerate() {
        let source = source_from_table(n, table)?;
        if let Some(first) = sources.iter().position(|s| s.name == source.name) {
            return Err(format!(
                "key `source[{n}].name`: {:?} is already the name of source[{first}]; each source needs a name of its own",
                source.name
            ));
        }
        sources.push(source);
    }
    Ok(sources)
}

fn source_from_table(n: usize, table: &toml::Table) -> Result<SourceConfig, String> {
    let mut rest = table.clone();
    let name = match rest.remove("name") {
        Some(toml::Value::String(name)) => name,
        Some(_) => return Err(format!("key `source[{n}].name`: must be a string")),
        None => {
            return Err(format!(
                "key `source[{n}].name`: missing; every source needs a name such as \"growthbook\""
            ))
        }
    };
    if !safe_source_name(&name) {
        return Err(format!(
            "key `source[{n}].name`: {name:?} is not a safe name: use 1 to {MAX_SOURCE_NAME} letters, digits, `_` or `-`, starting with a letter or digit"
        ));
    }
    let at = |key: &str| format!("key `source[{n}].{key}` (source {name})");
    let on_failure = match rest.remove("on_failure") {
        None => crate::sources::OnFailure::default(),
        Some(toml::Value::String(text)) if text == "use_last" => crate::sources::OnFailure::UseLast,
        Some(toml::Value::String(text)) if text == "fail" => crate::sources::OnFailure::Fail,
        Some(other) => {
            return Err(format!(
                "{}: {other} is not one of \"use_last\", \"fail\"",
                at("on_failure")
            ))
        }
    };
    let kind = match rest.remove("kind") {
        Some(toml::Value::String(kind)) => kind,
        Some(_) | None => {
            return Err(format!(
                "{}: missing or not a string; use one of \"growthbook\", \"sql\", \"file\"",
                at("kind")
            ))
        }
    };
    fn settings<T: serde::de::DeserializeOwned>(
        rest: toml::Table,
        n: usize,
        name: &str,
    ) -> Result<T, String> {
        serde_path_to_error::deserialize(toml::Value::Table(rest)).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                format!("key `source[{n}]` (source {name}): {}", e.inner())
            } else {
                format!("key `source[{n}].{path}` (source {name}): {}", e.inner())
            }
        })
    }
    let check_env = |key: &str, var: &str| -> Result<(), String> {
        check_env_name(&format!("source[{n}].{key}"), var)
            .map_err(|e| e.replacen("`: ", &format!("` (source {name}): "), 1))
    };
    let kind = match kind.as_str() {
        "growthbook" => {
            let settings: crate::sources::GrowthbookSource = settings(rest, n, &name)?;
            check_http_url(&format!("source[{n}].url"), &settings.url)
                .map_err(|e| format!("{e} (source {name})"))?;
            check_env("api_key_env", &settings.api_key_env)?;
            if settings.requests_per_minute == Some(0) {
                return Err(format!(
                    "{}: must be at least 1 (GrowthBook allows about 60 a minute per key)",
                    at("requests_per_minute")
                ));
            }
            for (key, id) in [
                ("metrics.conversions", Some(&settings.metrics.conversions)),
                ("metrics.revenue", Some(&settings.metrics.revenue)),
                ("metrics.orders", settings.metrics.orders.as_ref()),
            ] {
                if id.is_some_and(|id| id.trim().is_empty()) {
                    return Err(format!("{}: must name a GrowthBook metric id", at(key)));
                }
            }
            SourceKind::Growthbook(settings)
        }
        "sql" => {
            let settings: crate::sources::SqlSource = settings(rest, n, &name)?;
            check_env("url_env", &settings.url_env)?;
            for (key, query) in [
                ("experiments_query", &settings.experiments_query),
                ("arms_query", &settings.arms_query),
            ] {
                if query.trim().is_empty() {
                    return Err(format!("{}: must be a query", at(key)));
                }
            }
            SourceKind::Sql(settings)
        }
        "file" => {
            let settings: crate::sources::FileSource = settings(rest, n, &name)?;
            crate::sources::file::check_pattern(&settings.path)
                .map_err(|message| format!("{}: {message}", at("path")))?;
            SourceKind::File(settings)
        }
        other => {
            return Err(format!(
                "{}: {other:?} is not one of \"growthbook\", \"sql\", \"file\"",
                at("kind")
            ))
        }
    };
    Ok(SourceConfig {
        name,
        on_failure,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn webhook_addresses_are_parsed_whole_and_shown_without_their_path() {
        for bad in [
            "http://",
            "http://hooks example/x y",
            "ftp://host/x",
            "host/x",
            "https://host/a\tb",
        ] {
            let err = check_http_url("notify.webhook_url", bad).unwrap_err();
            assert!(
                err.starts_with("key `notify.webhook_url`: "),
                "{bad:?}: {err}"
            );
        }
        check_http_url(
            "notify.webhook_url",
            "https://hooks.slack.com/services/T/B/x",
        )
        .unwrap();
        check_http_url("notify.webhook_url", "http://127.0.0.1:9000/hook").unwrap();
        assert_eq!(
            redact_url("https://user:pw@hooks.slack.com/services/T/B/secret?q=1#f"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/x"),
            "http://127.0.0.1:9000/…"
        );
        assert_eq!(redact_url("not a url"), "(an invalid address)");
    }

    #[test]
    fn a_webhook_line_the_parser_quotes_is_shown_without_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hypod.toml");
        std::fs::write(
            &path,
            "[notify]\nwebhook_url = \"https://hooks.slack.com/services/T0/B0/S3CRET\n",
        )
        .unwrap();
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("S3CRET"), "{err}");
        assert!(err.contains("https://hooks.slack.com/…"), "{err}");
    }

    #[test]
    fn defaults_work_without_a_file() {
        let config = Config::load_with_env(None, &[]).unwrap();
        assert_eq!(config.database.url, "sqlite://hypod.db");
        assert_eq!(config.proposer.kind, ProposerKind::Builtin);
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hypod.toml");
        std::fs::write(&path, "[proposer]\nmax_proposal = 3\n").unwrap();
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_proposal"), "{err}");
        assert!(err.contains("hypod.toml"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hypod.toml");
        std::fs::write(&path, "[proposer]\nmax_proposals = 3\n").unwrap();
        let config =
            Config::load_with_env(Some(&path), &env(&[("HYPOD_PROPOSER__MAX_PROPOSALS", "5")]))
                .unwrap();
        assert_eq!(config.proposer.max_proposals, 5);
        let err = Config::load_with_env(Some(&path), &env(&[("HYPOD_PROPOSER__KIND", "magic")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("proposer.kind"), "{err}");
        assert!(Config::load_with_env(None, &env(&[("HYPOD_NOSECTION", "1")])).is_err());
    }

    /// The schedule and the listen address are checked when the configuration loads (every
    /// command, and `serve` at start), not at the first slot.
    #[test]
    fn schedule_and_listen_are_validated_at_load() {
        for (var, value, key) in [
            ("HYPOD_SCHEDULE__CRON", "a b c d e", "schedule.cron"),
            (
                "HYPOD_SCHEDULE__TIMEZONE",
                "Mars/Olympus_Mons",
                "schedule.timezone",
            ),
            ("HYPOD_SERVER__LISTEN", "not an address", "server.listen"),
        ] {
            let err = Config::load_with_env(None, &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains(value), "{var}: {err}");
        }
        let config = Config::load_with_env(
            None,
            &env(&[
                ("HYPOD_SCHEDULE__CRON", "30 2 * * 1-5"),
                ("HYPOD_SCHEDULE__TIMEZONE", "Europe/Berlin"),
                ("HYPOD_SERVER__LISTEN", "[::1]:9090"),
            ]),
        )
        .unwrap();
        assert_eq!(config.schedule.timezone, "Europe/Berlin");
    }

    /// A named policies folder that does not exist is an error, not a silent switch to the
    /// built-in policies; without the key, the built-ins still apply.
    #[test]
    fn a_named_policies_folder_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hypod.toml");
        std::fs::write(&path, "[governance]\npolicies = \"polcies\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("governance.policies") && err.contains("polcies"),
            "{err}"
        );
        let err = Config::load_with_env(
            None,
            &env(&[("HYPOD_GOVERNANCE__POLICIES", "/no/such/folder")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/no/such/folder"), "{err}");
        let err = Config::load_with_env(None, &env(&[("HYPOD_DATABASE__URL", "sqlite::memory:")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("in-memory"), "{err}");
        let err = Config::load_with_env(None, &env(&[("HYPOD_NOW", "yesterday")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HYPOD_NOW") && err.contains("yesterday"),
            "{err}"
        );
        std::fs::create_dir(dir.path().join("polcies")).unwrap();
        assert!(Config::load_with_env(Some(&path), &[]).is_ok());
        assert!(Config::load_with_env(None, &[]).is_ok());
    }

    #[test]
    fn relative_database_path_follows_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hypod.toml");
        std::fs::write(&path, "[database]\nurl = \"sqlite://q.db\"\n").unwrap();
        let config = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(
            config.database_url(),
            format!("sqlite://{}", dir.path().join("q.db").display())
        );
    }

    /// An override is a whole value of its key's type, or an error naming the variable.
    #[test]
    fn env_values_are_whole_or_refused() {
        for (var, value) in [
            ("HYPOD_PROPOSER__MAX_PROPOSALS", "8abc"),
            ("HYPOD_PROPOSER__MAX_PROPOSALS", "8 # eight"),
            ("HYPOD_PROPOSER__MAX_PROPOSALS", "8\nper_moment = 1"),
            ("HYPOD_ANALYSIS__ALPHA", "nan"),
            ("HYPOD_ANALYSIS__ALPHA", "0.05 0.1"),
            ("HYPOD_SCHEDULE__LEASE_SECONDS", "true"),
            ("HYPOD_NOSUCH__KEY", "1"),
            ("HYPOD_PROPOSER__MAX_PROPOSALS", "0"),
            ("HYPOD_PROPOSER__KIND", "magic"),
            ("HYPOD_PROPOSER__MAX_PROPOSAL", "3"),
        ] {
            let err = Config::load_with_env(None, &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("environment variable {var}:")),
                "{var}={value:?}: {err}"
            );
        }
        let config = Config::load_with_env(
            None,
            &env(&[
                ("HYPOD_PROPOSER__MAX_PROPOSALS", " 5 "),
                ("HYPOD_ANALYSIS__ALPHA", "1e-2"),
                ("HYPOD_ANALYSIS__POWER", "0.9"),
                ("HYPOD_LLM__MODEL", "qwen 2.5 # not a comment"),
                ("HYPOD_LLM__TIMEOUT_SECONDS", "600"),
            ]),
        )
        .unwrap();
        assert_eq!(config.proposer.max_proposals, 5);
        assert_eq!(config.analysis.alpha, 0.01);
        assert_eq!(config.llm.model, "qwen 2.5 # not a comment");
    }

    #[test]
    fn url_passwords_are_redacted_from_messages() {
        for (text, shown) in [
            (
                "cannot open the database postgres://postgres:S3cr3t@127.0.0.1:5432/db: refused",
                "cannot open the database postgres://postgres:***@127.0.0.1:5432/db: refused",
            ),
            (
                "\"postgresql://u:p@ss:w/rd@db.example:5432/x?sslmode=require\" is bad",
                "\"postgresql://u:***@db.example:5432/x?sslmode=require\" is bad",
            ),
            (
                "postgres://u@h/db?sslmode=disable&Password=S3cr3t&application_name=x",
                "postgres://u@h/db?sslmode=disable&Password=***&application_name=x",
            ),
            (
                "postgres://u@h/db and sqlite:///tmp/a.db",
                "postgres://u@h/db and sqlite:///tmp/a.db",
            ),
            ("https://example.com/a@b", "https://example.com/a@b"),
            ("no url here", "no url here"),
        ] {
            assert_eq!(redact_url_passwords(text), shown, "{text}");
        }
        // A bad URL in the file is named without its password.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hypod.toml");
        std::fs::write(
            &path,
            "[database]\nurl = \"postgres://u:S3cr3t@h:notaport/db\"\n",
        )
        .unwrap();
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database.url") && !err.contains("S3cr3t"),
            "{err}"
        );
        let err = Config::load_with_env(
            Some(&path),
            &env(&[("HYPOD_DATABASE__URL", "mysql://root:S3cr3t@h/db")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mysql://root:***@h/db") && !err.contains("S3cr3t"),
            "{err}"
        );
    }

    #[test]
    fn database_urls_are_checked_for_their_backend_and_resolved() {
        for url in [
            "mysql://x@y/z",
            "sqlite:",
            "sqlite://",
            "postgres://user@localhost:notaport/db",
        ] {
            let err = Config::load_with_env(None, &env(&[("HYPOD_DATABASE__URL", url)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("HYPOD_DATABASE__URL") && err.contains("database.url"),
                "{url}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hypod.toml");
        for url in ["sqlite:h.db", "sqlite://h.db", "sqlite:h.db?mode=rwc"] {
            std::fs::write(&path, format!("[database]\nurl = \"{url}\"\n")).unwrap();
            let config = Config::load_with_env(Some(&path), &[]).unwrap();
            assert!(
                config
                    .database_url()
                    .starts_with(&format!("sqlite://{}", dir.path().join("h.db").display())),
                "{url}: {}",
                config.database_url()
            );
            assert_eq!(config.sqlite_file(), Some(dir.path().join("h.db")));
        }
        std::fs::write(&path, "[database]\nurl = \"sqlite:///abs/h.db\"\n").unwrap();
        let config = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(config.sqlite_file(), Some(PathBuf::from("/abs/h.db")));
    }
}
