//! The audit log, read, for every backend: entries, the sealed head, and the snapshot a
//! verification replays (the log, its head, every proposal's status and every review, all of
//! one moment). Appending is [`super::append_audit`], inside each write.

use super::{Conn, Dialect, Sql};
use crate::domain::{AuditHead, ProposalStatus};
use crate::store::{
    corrupt, AuditEntry, AuditLog, AuditSnapshot, SealedHead, StoreError, StoredState,
};
use async_trait::async_trait;

const SEALED_HEAD: Sql = Sql::new("SELECT seq, hash, mac FROM audit_head WHERE id = 1");

#[async_trait]
impl<D: Dialect> AuditLog for D {
    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_entries(0, usize::MAX).await
    }

    async fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.connection().await?.audit_entries(after, limit).await
    }

    async fn audit_head(&self) -> Result<Option<SealedHead>, StoreError> {
        sealed_head(&mut self.connection().await?).await
    }

    async fn audit_snapshot(&self) -> Result<AuditSnapshot, StoreError> {
        // One snapshot: the log and what it must explain, from the same moment.
        let mut tx = self.begin_snapshot().await?;
        let rows: Vec<(String, String)> = tx
            .fetch_all(
                Sql::new("SELECT id, status FROM proposals ORDER BY id"),
                &[],
            )
            .await?;
        let statuses = rows
            .into_iter()
            .map(|(id, status)| {
                let status = ProposalStatus::parse(&status).ok_or_else(|| {
                    corrupt(
                        &format!("proposal {id}"),
                        format!("unknown status {status:?}"),
                    )
                })?;
                Ok((id, status))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let reviews = tx.reviews(None).await?;
        let entries = tx.audit_entries(0, usize::MAX).await?;
        let sealed = sealed_head(&mut tx).await?;
        tx.commit().await?;
        Ok(AuditSnapshot {
            entries,
            sealed,
            state: StoredState { statuses, reviews },
        })
    }
}

/// The sealed head of the audit chain, from its one row.
async fn sealed_head<C: Conn>(conn: &mut C) -> Result<Option<SealedHead>, StoreError> {
    let row: Option<(i64, String, String)> = conn.fetch_optional(SEALED_HEAD, &[]).await?;
    Ok(row.map(|(seq, hash, mac)| SealedHead {
        head: AuditHead { seq, hash },
        mac,
    }))
}
