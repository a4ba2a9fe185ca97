//! The audit use cases: verify the log (links, keys, head, an earlier head the caller kept,
//! and the replay against the stored proposals and reviews), show the current head, and list
//! or export the entries (NDJSON for a SIEM); and the one check of a proposal's draft before it
//! leaves hypod ([`App::vouch_draft`]: export, and the platform push of `push.rs`).

use super::{App, AppError, AppResult};
use crate::domain::{AuditHead, Proposal};
use crate::store::{audit, AuditEntry, AuditReport, DraftCheck, Store};

impl App {
    /// `audit verify`: the whole log under the audit key; `expected` is a head kept earlier.
    pub async fn verify_audit(&self, expected: Option<&AuditHead>) -> AppResult<AuditReport> {
        let key = self.audit_key()?;
        let store = self.store().await?;
        // A read-write open checked this already; a read-only one opens without the key.
        if self.access == super::Access::ReadOnly {
            super::open::refuse_minted_key(self.config(), &key, store.as_ref()).await?;
        }
        verify_store(store.as_ref(), &key, expected).await
    }

    /// Whether `proposal`'s stored draft may leave hypod: the draft logged (hashed) in its
    /// creation entry, checked through the subject index under the audit key. `Ok(true)` when
    /// the log vouches for it, `Ok(false)` when the proposal was logged before drafts were
    /// hashed (the log cannot say; the caller decides), and an error saying why otherwise.
    /// Export calls it for every draft it ships; so must anything else that ships a draft
    /// (the experimentation-platform push).
    pub async fn vouch_draft(&self, proposal: &Proposal) -> AppResult<bool> {
        let key = self.audit_key()?;
        let entries = self
            .store()
            .await?
            .audit_entries_about(&proposal.id)
            .await?;
        match crate::store::vouch::check_draft(&key, &proposal.id, &proposal.draft, &entries) {
            DraftCheck::Vouched => Ok(true),
            DraftCheck::Unhashed => Ok(false),
            DraftCheck::Refused(problem) => Err(AppError::new(
                super::ErrorKind::Conflict,
                format!(
                    "proposal {}'s draft may not leave hypod: {problem}",
                    proposal.id
                ),
            )),
        }
    }

    /// `audit head`: the current head (`None` for an empty log).
    pub async fn audit_head(&self) -> AppResult<Option<AuditHead>> {
        let store = self.store().await?;
        Ok(store.audit_head().await?.map(|sealed| sealed.head))
    }

    /// Up to `limit` entries after `after`, oldest first (the API's pages, `audit export`).
    pub async fn audit_entries(&self, after: i64, limit: usize) -> AppResult<Vec<AuditEntry>> {
        Ok(self.store().await?.audit_entries(after, limit).await?)
    }
}

/// Parses a head given on the command line or in a query (`SEQ:HASH`).
pub fn parse_head(text: &str) -> AppResult<AuditHead> {
    text.parse()
        .map_err(|e: String| AppError::input(format!("head {text:?}: {e}")))
}

/// Verifies the log of an open `store` under `key` (the storage suite's check on every
/// backend).
pub async fn verify_store(
    store: &dyn Store,
    key: &crate::store::AuditKey,
    expected: Option<&AuditHead>,
) -> AppResult<AuditReport> {
    let snapshot = store.audit_snapshot().await?;
    Ok(audit::verify(
        key,
        &snapshot.entries,
        snapshot.sealed.as_ref(),
        expected,
        &snapshot.state,
    ))
}
