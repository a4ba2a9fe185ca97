//! Who is asking, and what they may do. API tokens (created with the secret printed once and
//! only its SHA-256 stored; listed; revoked), the resolution of credentials — a bearer token, a
//! trusted proxy's `X-Forwarded-User` / `X-Forwarded-Groups`, a command-line `--as USER`
//! checked against the tokens' users — into one [`Principal`], and the one table of which role
//! each [`Permission`] needs, checked by every route and command that acts.
//!
//! A token counts only as the audit log explains it: at use, its row is checked against its
//! own `token.create` / `token.revoke` entries (found through the subject index, each entry's
//! hash and MAC checked under the audit key), so a row added, un-revoked or raised by hand
//! is refused; `audit verify` replays the whole log. A token so checked is believed for
//! `server.token_cache_seconds` without checking again ([`super::cache::TokenCache`]).

use super::{App, AppError, AppResult, ErrorKind};
use crate::config::ProxyGroups;
use crate::domain::{echo, Identity, Role, TextError, TokenKind};
use crate::store::{token_hash, vouch, Store, TokenRecord};
use serde::Serialize;

/// What a request wants to do; each needs a least role ([`Permission::least_role`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read the queue, runs, experiments, health, policies.
    Read,
    /// Approve, reject or comment on a proposal.
    Review,
    /// Export approved proposals for an experimentation platform.
    Export,
    /// Read and verify the audit log.
    Audit,
    /// Start a run now.
    TriggerRun,
    /// Import experiments.
    Import,
}

impl Permission {
    /// The least role that may do this; roles are ordered viewer < reviewer < governance <
    /// admin and each may do what the ones below it may.
    pub fn least_role(self) -> Role {
        match self {
            Permission::Read => Role::Viewer,
            Permission::Review | Permission::Export => Role::Reviewer,
            Permission::Audit | Permission::TriggerRun => Role::Governance,
            Permission::Import => Role::Admin,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Permission::Read => "read the queue",
            Permission::Review => "review proposals",
            Permission::Export => "export proposals",
            Permission::Audit => "read the audit log",
            Permission::TriggerRun => "start a run",
            Permission::Import => "import experiments",
        }
    }
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Reviewer => 1,
        Role::Governance => 2,
        Role::Admin => 3,
    }
}

/// How a principal was identified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum AuthSource {
    /// A bearer token (its id).
    Token(String),
    /// A trusted reverse proxy's headers.
    Proxy,
    /// The command line, checked against the tokens' users.
    Cli,
}

/// A person (or an agent acting for one), identified, with the role they act in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub user: Identity,
    pub role: Role,
    pub via: AuthSource,
    /// An agent reads and suggests drafts, and never approves or rejects whatever its role.
    pub kind: TokenKind,
}

impl Principal {
    /// The same principal acting as an agent (`hypod mcp --as USER`: whatever tokens the user
    /// holds, an assistant speaking for them never decides).
    pub fn as_agent(self) -> Principal {
        Principal {
            kind: TokenKind::Agent,
            ..self
        }
    }

    /// `Ok` when this principal's role allows `permission`, else a 403-kind error.
    pub fn require(&self, permission: Permission) -> AppResult<()> {
        let least = permission.least_role();
        if rank(self.role) >= rank(least) {
            Ok(())
        } else {
            Err(AppError::new(
                ErrorKind::Forbidden,
                format!(
                    "{} is {} and may not {}: that needs {} or above",
                    self.user,
                    self.role,
                    permission.describe(),
                    least
                ),
            ))
        }
    }

    pub fn may(&self, permission: Permission) -> bool {
        self.require(permission).is_ok()
    }
}

/// A token just created: the secret is in `token`, shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    pub id: String,
    pub user: String,
    pub role: Role,
    pub kind: TokenKind,
    pub token: String,
}

fn user_identity(raw: &str) -> AppResult<Identity> {
    Identity::parse(raw).map_err(|e| AppError::input(format!("--user {}: {e}", echo(raw))))
}

impl App {
    /// `token create`: a new random secret for `user` in `role` (a person's, or with `--agent`
    /// an agent's); only its hash is stored.
    pub async fn create_token(
        &self,
        user: &str,
        role: Role,
        kind: TokenKind,
        by: &str,
    ) -> AppResult<CreatedToken> {
        use rand::RngCore as _;
        let user = user_identity(user)?;
        self.refuse_look_alike(&user).await?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("hypod_{}", hex::encode(secret));
        let record = TokenRecord {
            id: uuid::Uuid::now_v7().to_string(),
            user: user.to_string(),
            role,
            created_at: crate::now(),
            created_by: by.to_string(),
            revoked_at: None,
            kind,
            hash: token_hash(&token),
        };
        let store = self.store().await?;
        store.create_token(&record, &token_hash(&token)).await?;
        Ok(CreatedToken {
            id: record.id,
            user: record.user,
            role,
            kind,
            token,
        })
    }

    /// One person, one spelling: a new token's user may not be a look-alike (the same
    /// confusable skeleton, another spelling) of a user who already holds a token.
    async fn refuse_look_alike(&self, user: &Identity) -> AppResult<()> {
        let tokens = self.store().await?.list_tokens().await?;
        let other = tokens.iter().find(|t| {
            t.user != user.as_str() && Identity::of_record(&t.user).is_ok_and(|u| u == *user)
        });
        match other {
            Some(t) => Err(AppError::input(format!(
                "--user {}: looks the same as {}, who already holds token {}; hypod counts them as one person, so give that user the token under that spelling",
                echo(user.as_str()),
                echo(&t.user),
                t.id
            ))),
            None => Ok(()),
        }
    }

    /// `token list`: every token (never a secret), revoked ones included.
    pub async fn list_tokens(&self) -> AppResult<Vec<TokenRecord>> {
        Ok(self.store().await?.list_tokens().await?)
    }

    /// `token revoke ID`.
    pub async fn revoke_token(&self, id: &str, by: &str) -> AppResult<()> {
        let revoked = self.store().await?.revoke_token(id, by).await?;
        // This process believes it no more, at once (other processes within their cache's time).
        self.tokens.forget(id);
        if revoked {
            Ok(())
        } else {
            Err(AppError::new(
                ErrorKind::NotFound,
                format!(
                    "no live token has id {} (`hypod token list` shows them)",
                    echo(id)
                ),
            ))
        }
    }

    /// The principal a bearer token identifies: found live in the database and vouched for
    /// by its audit entries, or, within `server.token_cache_seconds` of that check, as it was
    /// then ([`super::cache::TokenCache`]).
    pub async fn principal_for_token(&self, secret: &str) -> AppResult<Principal> {
        let unknown = || {
            AppError::new(
                ErrorKind::Unauthenticated,
                "the token is unknown or revoked",
            )
        };
        // Token secrets are short ASCII; anything else is not one (and is never hashed at length).
        if secret.len() > 128 || !secret.is_ascii() {
            return Err(unknown());
        }
        let hash = token_hash(secret);
        if let Some(principal) = self.tokens.get(&hash) {
            return Ok(principal);
        }
        let store = self.store().await?;
        let record = store.token_by_hash(&hash).await?.ok_or_else(unknown)?;
        self.vouch_token(store.as_ref(), &record).await?;
        let user = Identity::parse(&record.user).map_err(|e| match e {
            // A token created before names had to be written in one script.
            TextError::MixedScript { .. } => AppError::new(
                ErrorKind::Forbidden,
                format!(
                    "token {}: {e}; an admin revokes it and creates one for the name written in one script",
                    record.id
                ),
            ),
            other => AppError::runtime(format!("token {}: stored user: {other}", record.id)),
        })?;
        let principal = Principal {
            user,
            role: record.role,
            via: AuthSource::Token(record.id),
            kind: record.kind,
        };
        self.tokens.put(&hash, &principal);
        Ok(principal)
    }
}

impl App {
    /// `Ok` when the audit log explains this token row: its creation entry names its user,
    /// role, secret hash and creator, and no revocation entry contradicts it being live. Else
    /// an Unauthenticated error saying why (the token is refused, not just its request).
    async fn vouch_token(&self, store: &dyn Store, token: &TokenRecord) -> AppResult<()> {
        let entries = store.audit_entries_about(&token.id).await?;
        vouch::check_token(&self.audit_key()?, token, &entries).map_err(|problem| {
            AppError::new(
                ErrorKind::Unauthenticated,
                format!(
                    "token {} of {} is refused: {problem}; the audit log does not explain it (`hypod audit verify` reports it)",
                    token.id, token.user
                ),
            )
        })
    }
}

/// The principal a trusted proxy's headers name: the highest role among the groups.
pub fn principal_from_proxy(
    groups_config: &ProxyGroups,
    user: &str,
    groups: &str,
) -> AppResult<Principal> {
    let user = Identity::parse(user)
        .map_err(|e| AppError::new(ErrorKind::Unauthenticated, format!("X-Forwarded-User: {e}")))?;
    let groups: Vec<&str> = groups
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    let has = |names: &[String]| names.iter().any(|n| groups.contains(&n.as_str()));
    let role = [
        (Role::Admin, &groups_config.admin),
        (Role::Governance, &groups_config.governance),
        (Role::Reviewer, &groups_config.reviewer),
        (Role::Viewer, &groups_config.viewer),
    ]
    .into_iter()
    .find(|(_, names)| has(names))
    .map(|(role, _)| role)
    .ok_or_else(|| {
        AppError::new(
            ErrorKind::Forbidden,
            format!("{user} is in none of hypod's groups (server.proxy_groups)"),
        )
    })?;
    Ok(Principal {
        user,
        role,
        via: AuthSource::Proxy,
        kind: TokenKind::Person,
    })
}

impl App {
    /// The principal a command-line review names with `--as USER`: a user who holds a live token,
    /// in the highest role among their tokens. The shell cannot declare a role of its own. A
    /// user whose only tokens are agents' is an agent (one person token makes them a person,
    /// in that token's role).
    pub async fn cli_principal(&self, user: &str) -> AppResult<Principal> {
        let user = Identity::parse(user)
            .map_err(|e| AppError::input(format!("--as {}: {e}", echo(user))))?;
        let store = self.store().await?;
        // The person's live tokens, matched as the review rule matches people (by skeleton); the
        // review is recorded under the token's spelling of the name.
        let live: Vec<(Identity, TokenRecord)> = store
            .list_tokens()
            .await?
            .into_iter()
            .filter(|t| t.revoked_at.is_none())
            .filter_map(|t| Some((Identity::of_record(&t.user).ok()?, t)))
            .filter(|(holder, _)| *holder == user)
            .collect();
        // Only the tokens the audit log explains give a role.
        let mut vouched = Vec::with_capacity(live.len());
        let mut refused = None;
        for (holder, token) in live {
            match self.vouch_token(store.as_ref(), &token).await {
                Ok(()) => vouched.push((holder, token.role, token.kind)),
                Err(e) if e.kind == ErrorKind::Unauthenticated => refused = Some(e),
                Err(e) => return Err(e),
            }
        }
        let kind = if vouched
            .iter()
            .any(|(_, _, kind)| *kind == TokenKind::Person)
        {
            TokenKind::Person
        } else {
            TokenKind::Agent
        };
        let Some((holder, role, _)) = vouched
            .into_iter()
            .filter(|(_, _, k)| *k == kind)
            .max_by_key(|(_, role, _)| rank(*role))
        else {
            if let Some(refused) = refused {
                return Err(AppError::new(ErrorKind::Forbidden, refused.message));
            }
            return Err(AppError::new(
                ErrorKind::Forbidden,
                format!(
                    "{user} holds no live token, so hypod does not know their role; an admin gives them one with `hypod token create --user {user} --role reviewer`"
                ),
            ));
        };
        Ok(Principal {
            user: holder,
            role,
            via: AuthSource::Cli,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_may_what_the_roles_below_it_may() {
        let principal = |role| Principal {
            user: Identity::parse("ada").unwrap(),
            role,
            via: AuthSource::Cli,
            kind: TokenKind::Person,
        };
        let all = [
            Permission::Read,
            Permission::Review,
            Permission::Export,
            Permission::Audit,
            Permission::TriggerRun,
            Permission::Import,
        ];
        let allowed = |role| -> Vec<Permission> {
            all.into_iter()
                .filter(|p| principal(role).may(*p))
                .collect()
        };
        assert_eq!(allowed(Role::Viewer), [Permission::Read]);
        assert_eq!(
            allowed(Role::Reviewer),
            [Permission::Read, Permission::Review, Permission::Export]
        );
        assert_eq!(allowed(Role::Governance).len(), 5);
        assert_eq!(allowed(Role::Admin).len(), 6);
        let refused = principal(Role::Viewer).require(Permission::Review);
        assert_eq!(refused.map_err(|e| e.kind), Err(ErrorKind::Forbidden));
    }

    #[test]
    fn proxy_groups_give_the_highest_role_and_unknown_groups_none() {
        let groups = ProxyGroups::default();
        let p =
            principal_from_proxy(&groups, " Ada ", "staff, hypod-reviewers,hypod-admins").unwrap();
        assert_eq!((p.user.as_str(), p.role), ("ada", Role::Admin));
        let none = principal_from_proxy(&groups, "ada", "staff");
        assert_eq!(none.map_err(|e| e.kind), Err(ErrorKind::Forbidden));
        let hidden = principal_from_proxy(&groups, "ada\u{200B}", "hypod-admins");
        assert_eq!(hidden.map_err(|e| e.kind), Err(ErrorKind::Unauthenticated));
    }
}
