//! The audit use cases: verify the log (links, keys, head, an earlier head the caller kept,
//! and the replay against the stored proposals and reviews), show the current head, and list
//! or export the entries (NDJSON for a SIEM).

use super::{AppError, AppResult};
use crate::domain::AuditHead;
use crate::store::{audit, AuditEntry, AuditKey, AuditReport, Store};

/// Verifies the whole log of `store` under `key`; `expected` is a head kept earlier.
pub async fn verify_store(
    store: &dyn Store,
    key: &AuditKey,
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

/// `audit verify`.
pub async fn verify(
    config: &crate::config::Config,
    expected: Option<&AuditHead>,
) -> AppResult<AuditReport> {
    let key = super::audit_key(config)?;
    let store = super::open_store_read_only(config).await?;
    verify_store(store.as_ref(), &key, expected).await
}

/// `audit head`: the current head (`None` for an empty log).
pub async fn head(config: &crate::config::Config) -> AppResult<Option<AuditHead>> {
    let store = super::open_store_read_only(config).await?;
    Ok(store.audit_head().await?.map(|sealed| sealed.head))
}

/// Up to `limit` entries after `after` (for the API's pages and `audit export`).
pub async fn entries(store: &dyn Store, after: i64, limit: usize) -> AppResult<Vec<AuditEntry>> {
    Ok(store.audit_entries(after, limit).await?)
}

/// Parses a head given on the command line or in a query (`SEQ:HASH`).
pub fn parse_head(text: &str) -> AppResult<AuditHead> {
    text.parse()
        .map_err(|e: String| AppError::input(format!("--head: {e}")))
}
