//! What agents (an editor assistant, a team's chat bot, over MCP) may do beyond reading: submit
//! drafts, within caps. A submission is checked against `[mcp]`'s caps — per token (or per
//! `--as` user on stdio) and minute in this process, counting every attempt, and per user and
//! day in the database, counting the drafts recorded — and then takes a run's path
//! ([`App::submit_draft`]). Agents never approve or reject: [`App::review`] refuses them.

use super::access::{AuthSource, Permission, Principal};
use super::run::{Submission, SubmissionView};
use super::{App, AppError, AppResult, ErrorKind};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The submissions each key made in the last minute, in this process.
#[derive(Debug, Default)]
pub struct Limiter {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    /// Counts one attempt for `key` now; `false` when `per_minute` were made in the last
    /// minute already (the attempt is then not counted).
    fn admit(&self, key: &str, per_minute: u32, now: Instant) -> bool {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = recent.entry(key.to_string()).or_default();
        while window
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60))
        {
            window.pop_front();
        }
        if window.len() >= per_minute as usize {
            return false;
        }
        window.push_back(now);
        true
    }
}

/// The key of a principal's per-minute cap: its token, or the user on stdio and behind a proxy.
fn limiter_key(principal: &Principal) -> String {
    match &principal.via {
        AuthSource::Token(id) => format!("token:{id}"),
        AuthSource::Cli | AuthSource::Proxy => format!("user:{}", principal.user),
    }
}

impl App {
    /// `submit_draft` for an agent acting for `principal`, through the MCP client `client`:
    /// the caps, then a run's path. The principal needs the role to read the queue.
    pub async fn submit_as_agent(
        &self,
        principal: &Principal,
        client: Option<String>,
        draft: serde_json::Value,
    ) -> AppResult<SubmissionView> {
        principal.require(Permission::Read)?;
        let caps = &self.config().mcp;
        if !self.submissions.admit(
            &limiter_key(principal),
            caps.submissions_per_minute,
            Instant::now(),
        ) {
            return Err(AppError::new(
                ErrorKind::TooMany,
                format!(
                    "{} submitted {} draft(s) in the last minute, the limit (mcp.submissions_per_minute); try again in a minute",
                    principal.user, caps.submissions_per_minute
                ),
            ));
        }
        let trigger = crate::domain::Trigger::Mcp(principal.user.to_string()).to_string();
        let since = crate::now() - chrono::Duration::hours(24);
        let today = self
            .store()
            .await?
            .count_runs_since(&trigger, since)
            .await?;
        if today >= u64::from(caps.submissions_per_day) {
            return Err(AppError::new(
                ErrorKind::TooMany,
                format!(
                    "{}'s agents submitted {today} draft(s) in the last 24 hours, the limit (mcp.submissions_per_day)",
                    principal.user
                ),
            ));
        }
        self.submit_draft(Submission {
            draft,
            user: principal.user.clone(),
            client: client.map(|c| crate::domain::bounded(&c).into_owned()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minute_cap_counts_attempts_per_key_and_forgets_them_after_a_minute() {
        let limiter = Limiter::default();
        let start = Instant::now();
        assert!(limiter.admit("token:a", 2, start));
        assert!(limiter.admit("token:a", 2, start + Duration::from_secs(1)));
        assert!(!limiter.admit("token:a", 2, start + Duration::from_secs(2)));
        // Another token has its own minute.
        assert!(limiter.admit("token:b", 2, start + Duration::from_secs(2)));
        // A minute after the first attempt, one slot is free again.
        assert!(limiter.admit("token:a", 2, start + Duration::from_secs(60)));
        assert!(!limiter.admit("token:a", 2, start + Duration::from_secs(60)));
        // A cap of 0 admits nothing.
        assert!(!limiter.admit("token:c", 0, start));
    }
}
