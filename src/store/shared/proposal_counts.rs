//! The queue's count of proposals per status, for every backend: one grouped query.

use super::{Conn, Dialect, Sql};
use crate::domain::ProposalStatus;
use crate::store::{ProposalCounts, StoreError};
use async_trait::async_trait;

#[async_trait]
impl<D: Dialect> ProposalCounts for D {
    async fn count_proposals_by_status(&self) -> Result<Vec<(ProposalStatus, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = self
            .connection()
            .await?
            .fetch_all(
                Sql::new("SELECT status, COUNT(*) FROM proposals GROUP BY status ORDER BY status"),
                &[],
            )
            .await?;
        rows.into_iter()
            .map(|(status, n)| {
                let status = ProposalStatus::parse(&status).ok_or_else(|| {
                    crate::store::corrupt("proposal status", format!("unknown status {status:?}"))
                })?;
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}
