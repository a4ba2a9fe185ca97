//! History sources, for every backend: what each keeps between syncs (its incremental state,
//! the ids it last listed, when its last good sync was), and a sync's write: the experiments
//! upserted as an import upserts them, the source's state, and one `history.sync` audit entry,
//! all in one write transaction, so that a failure part-way leaves nothing written.

use super::experiments::upsert_rows;
use super::{append_audit, database_now, Arg, Conn, Dialect, Sql};
use crate::domain::AuditAction;
use crate::store::{
    corrupt, timestamp, SourceState, SourceStates, StoreError, SyncCounts, SyncWrite,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashSet};

#[async_trait]
impl<D: Dialect> SourceStates for D {
    async fn source_state(&self, name: &str) -> Result<Option<SourceState>, StoreError> {
        let row: Option<(String, String, String)> = self
            .connection()
            .await?
            .fetch_optional(
                Sql::new("SELECT state, listed, last_ok_at FROM sources WHERE name = $1"),
                &[Arg::Text(name)],
            )
            .await?;
        let Some((state, listed, last_ok_at)) = row else {
            return Ok(None);
        };
        let what = format!("source {name}");
        Ok(Some(SourceState {
            name: name.to_string(),
            state: serde_json::from_str(&state).map_err(|e| corrupt(&what, e))?,
            listed: serde_json::from_str(&listed).map_err(|e| corrupt(&what, e))?,
            last_ok_at: DateTime::parse_from_rfc3339(&last_ok_at)
                .map_err(|e| corrupt(&what, e))?
                .with_timezone(&Utc),
        }))
    }

    async fn write_sync(&self, sync: &SyncWrite<'_>) -> Result<SyncCounts, StoreError> {
        let mut tx = self.begin_write().await?;
        // The last good sync is dated by the database's clock.
        let now = database_now::<D, _>(&mut tx).await?;
        let previous: Option<(String,)> = tx
            .fetch_optional(
                Sql::new("SELECT listed FROM sources WHERE name = $1"),
                &[Arg::Text(sync.source)],
            )
            .await?;
        let previous: Vec<String> = match previous {
            Some((listed,)) => serde_json::from_str(&listed)
                .map_err(|e| corrupt(&format!("source {}", sync.source), e))?,
            None => Vec::new(),
        };
        let listed: HashSet<&str> = sync.listed.iter().map(String::as_str).collect();
        let mut vanished: Vec<String> = previous
            .into_iter()
            .filter(|id| !listed.contains(id.as_str()))
            .collect();
        vanished.sort();
        vanished.dedup();

        let (upserted, written) = upsert_rows(&mut tx, sync.experiments, now).await?;
        // Provenance: the source is the one that last wrote each experiment it read.
        for experiment in sync.experiments {
            tx.execute(
                Sql::new(
                    "UPDATE experiments SET source = $1 WHERE id = $2 \
                     AND (source IS NULL OR source <> $1)",
                ),
                &[Arg::Text(sync.source), Arg::Text(&experiment.id)],
            )
            .await?;
        }
        let mut ids: Vec<&str> = listed.into_iter().collect();
        ids.sort_unstable();
        let listed_json = serde_json::to_string(&ids).map_err(|e| corrupt("source ids", e))?;
        let state_json =
            serde_json::to_string(sync.state).map_err(|e| corrupt("source state", e))?;
        tx.execute(
            Sql::new(
                "INSERT INTO sources (name, state, listed, last_ok_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET state = excluded.state, \
                 listed = excluded.listed, last_ok_at = excluded.last_ok_at",
            ),
            &[
                Arg::Text(sync.source),
                Arg::Text(&state_json),
                Arg::Text(&listed_json),
                Arg::Text(&timestamp(now)),
            ],
        )
        .await?;
        let counts = SyncCounts {
            inserted: upserted.inserted,
            // A record the source reported unchanged was not read, and is left as stored.
            unchanged: upserted.unchanged
                + sync.listed.len().saturating_sub(sync.experiments.len()),
            updated: upserted.updated,
            vanished,
        };
        let detail = sync_detail(sync, &counts, &written);
        append_audit(
            &mut tx,
            self.audit_key(),
            sync.by,
            AuditAction::HistorySync,
            sync.source,
            &detail,
        )
        .await?;
        tx.commit().await?;
        Ok(counts)
    }
}

/// The detail of a `history.sync` entry: the source, the counts, the requests made, the
/// digest of what was read, the ids that vanished and the `written` digests an import's entry
/// has (which `audit verify` replays the same way).
fn sync_detail(
    sync: &SyncWrite<'_>,
    counts: &SyncCounts,
    written: &BTreeMap<&str, String>,
) -> String {
    serde_json::json!({
        "source": sync.source,
        "read": sync.read,
        "inserted": counts.inserted,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "vanished": counts.vanished.len(),
        "vanished_ids": counts.vanished,
        "requests": sync.requests,
        "read_digest": sync.read_digest,
        "written": written,
    })
    .to_string()
}
