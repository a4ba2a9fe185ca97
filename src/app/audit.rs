//! The audit use cases: verify the log (links, keys, head, an earlier head the caller kept,
//! and the replay against the stored proposals and reviews), show the current head, and list
//! or export the entries (NDJSON for a SIEM).

use super::{App, AppError, AppResult};
use crate::domain::AuditHead;
use crate::store::{audit, AuditEntry, AuditReport, Store};

impl App {
    /// `audit verify`: the whole log under the audit key; `expected` is a head kept earlier.
    pub async fn verify_audit(&self, expected: Option<&AuditHead>) -> AppResult<AuditReport> {
        let key = self.audit_key()?;
        verify_store(self.store().await?.as_ref(), &key, expected).await
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
