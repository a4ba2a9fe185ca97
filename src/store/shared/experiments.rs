//! Imports, for every backend: experiments inserted or updated by id in one write transaction
//! with one audit entry, an unchanged body left untouched. The entry names who imported and
//! the digest of every record written ([`crate::store::vouch::record_digest`]), which `audit
//! verify` recomputes from the stored experiments. The history's mark, read from the audit
//! log, tells a cached analysis it is stale. Loading them is the backend's.

use super::{append_audit, database_now, Arg, Conn, Dialect, Sql};
use crate::domain::AuditAction;
use crate::history::Experiment;
use crate::store::vouch::{import_detail, record_digest};
use crate::store::{corrupt, Experiments, HistoryMark, StoreError, UpsertCounts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

/// Experiments imported in one statement at most (where the backend has one).
const BATCH: usize = 1_000;

#[async_trait]
impl<D: Dialect> Experiments for D {
    async fn upsert_experiments(
        &self,
        experiments: &[Experiment],
        by: &str,
    ) -> Result<UpsertCounts, StoreError> {
        let mut tx = self.begin_write().await?;
        // The stamps are the database's clock.
        let now = database_now::<D, _>(&mut tx).await?;
        let (counts, written) = upsert_rows(&mut tx, experiments, now).await?;
        if !written.is_empty() {
            forget_sources(&mut tx, &written).await?;
        }
        if counts.inserted + counts.updated > 0 {
            let detail = import_detail(&counts, &written);
            append_audit(
                &mut tx,
                self.audit_key(),
                by,
                AuditAction::ExperimentsUpsert,
                "experiments",
                &detail,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(counts)
    }

    async fn load_experiments(&self) -> Result<Vec<Experiment>, StoreError> {
        Dialect::load_experiments(self).await
    }

    async fn history_mark(&self, since: i64) -> Result<HistoryMark, StoreError> {
        history_mark(&mut self.connection().await?, since).await
    }
}

/// Inserts or updates experiments by id inside `tx`, leaving unchanged bodies untouched: the
/// counts and the [`record_digest`] of every record written, by id (a later duplicate wins).
/// What an import and a sync of a source write, before their own audit entries.
pub(super) async fn upsert_rows<'e, C: Conn>(
    tx: &mut C,
    experiments: &'e [Experiment],
    now: DateTime<Utc>,
) -> Result<(UpsertCounts, BTreeMap<&'e str, String>), StoreError> {
    let mut counts = UpsertCounts::default();
    let mut written: BTreeMap<&str, String> = BTreeMap::new();
    for batch in experiments.chunks(BATCH) {
        let mut bodies = Vec::with_capacity(batch.len());
        for experiment in batch {
            bodies.push(serde_json::to_string(experiment).map_err(|e| corrupt("experiment", e))?);
        }
        // A batch that names an id twice goes row by row, so that the later record updates
        // the earlier as it would alone.
        let mut ids = std::collections::HashSet::with_capacity(batch.len());
        if batch.iter().all(|e| ids.insert(e.id.as_str())) {
            if let Some(changed) = tx.upsert_distinct(batch, &bodies, now).await? {
                let by_id: HashMap<&str, &Experiment> =
                    batch.iter().map(|e| (e.id.as_str(), e)).collect();
                for (id, inserted) in &changed {
                    if *inserted {
                        counts.inserted += 1;
                    } else {
                        counts.updated += 1;
                    }
                    if let Some((id, experiment)) = by_id.get_key_value(id.as_str()) {
                        written.insert(id, record_digest(experiment));
                    }
                }
                counts.unchanged += batch.len() - changed.len();
                continue;
            }
        }
        for (experiment, body) in batch.iter().zip(&bodies) {
            if upsert_one(tx, experiment, body, now, &mut counts).await? {
                written.insert(&experiment.id, record_digest(experiment));
            }
        }
    }
    Ok((counts, written))
}

/// An import that rewrote experiments a source had written makes them the import's again
/// (their `source` is cleared); nothing to do, and one read, when no source ever wrote one.
async fn forget_sources<C: Conn>(
    tx: &mut C,
    written: &BTreeMap<&str, String>,
) -> Result<(), StoreError> {
    let (any,): (bool,) = tx
        .fetch_one(
            Sql::new("SELECT EXISTS (SELECT 1 FROM experiments WHERE source IS NOT NULL)"),
            &[],
        )
        .await?;
    if any {
        for id in written.keys() {
            tx.execute(
                Sql::new(
                    "UPDATE experiments SET source = NULL WHERE id = $1 AND source IS NOT NULL",
                ),
                &[Arg::Text(id)],
            )
            .await?;
        }
    }
    Ok(())
}

/// See [`Experiments::history_mark`]: imports log `experiments.*` entries, syncs of sources
/// `history.*` ones and runs `run.*` ones (with the proposals the learning loop reads), each in its own write transaction.
async fn history_mark<C: Conn>(conn: &mut C, since: i64) -> Result<HistoryMark, StoreError> {
    let (head, changed): (i64, bool) = conn
        .fetch_one(
            Sql::new(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM audit_log), EXISTS (SELECT 1 \
                 FROM audit_log WHERE seq > $1 AND (action LIKE 'experiments.%' OR action LIKE 'history.%' OR action LIKE 'run.%'))",
            ),
            &[Arg::Int(since)],
        )
        .await?;
    Ok(HistoryMark { head, changed })
}

/// Inserts or updates one experiment, leaving an unchanged body untouched (compared as the
/// backend stores it: text on SQLite, `jsonb` on PostgreSQL, whatever the key order); `true`
/// when it was written.
async fn upsert_one<C: Conn>(
    tx: &mut C,
    experiment: &Experiment,
    body: &str,
    now: DateTime<Utc>,
    counts: &mut UpsertCounts,
) -> Result<bool, StoreError> {
    let same: Option<(bool,)> = tx
        .fetch_optional(
            Sql::new("SELECT body = $2 FROM experiments WHERE id = $1"),
            &[Arg::Text(&experiment.id), Arg::json(body)],
        )
        .await?;
    match same {
        Some((true,)) => {
            counts.unchanged += 1;
            return Ok(false);
        }
        Some((false,)) => {
            tx.execute(
                Sql::new(
                    "UPDATE experiments SET moment = $1, status = $2, body = $3, updated_at = $4 \
                     WHERE id = $5",
                ),
                &[
                    Arg::Text(experiment.moment.as_str()),
                    Arg::Text(experiment.status.as_str()),
                    Arg::json(body),
                    Arg::time(now),
                    Arg::Text(&experiment.id),
                ],
            )
            .await?;
            counts.updated += 1;
        }
        None => {
            tx.execute(
                Sql::new(
                    "INSERT INTO experiments (id, moment, status, body, imported_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5)",
                ),
                &[
                    Arg::Text(&experiment.id),
                    Arg::Text(experiment.moment.as_str()),
                    Arg::Text(experiment.status.as_str()),
                    Arg::json(body),
                    Arg::time(now),
                ],
            )
            .await?;
            counts.inserted += 1;
        }
    }
    Ok(true)
}
