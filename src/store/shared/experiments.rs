//! Imports, for every backend: experiments inserted or updated by id in one write transaction
//! with one audit entry, an unchanged body left untouched. Loading them is the backend's.

use super::{append_audit, database_now, Arg, Conn, Dialect, Sql};
use crate::domain::AuditAction;
use crate::history::Experiment;
use crate::store::{corrupt, Experiments, StoreError, UpsertCounts};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Experiments imported in one statement at most (where the backend has one).
const BATCH: usize = 1_000;

#[async_trait]
impl<D: Dialect> Experiments for D {
    async fn upsert_experiments(
        &self,
        experiments: &[Experiment],
    ) -> Result<UpsertCounts, StoreError> {
        let mut counts = UpsertCounts::default();
        let mut tx = self.begin_write().await?;
        // The stamps are the database's clock.
        let now = database_now::<D, _>(&mut tx).await?;
        for batch in experiments.chunks(BATCH) {
            let mut bodies = Vec::with_capacity(batch.len());
            for experiment in batch {
                bodies
                    .push(serde_json::to_string(experiment).map_err(|e| corrupt("experiment", e))?);
            }
            // A batch that names an id twice goes row by row, so that the later record updates
            // the earlier as it would alone.
            let mut ids = std::collections::HashSet::with_capacity(batch.len());
            if batch.iter().all(|e| ids.insert(e.id.as_str())) {
                if let Some((inserted, updated)) = tx.upsert_distinct(batch, &bodies, now).await? {
                    counts.inserted += inserted;
                    counts.updated += updated;
                    counts.unchanged += batch.len() - inserted - updated;
                    continue;
                }
            }
            for (experiment, body) in batch.iter().zip(&bodies) {
                upsert_one(&mut tx, experiment, body, now, &mut counts).await?;
            }
        }
        if counts.inserted + counts.updated > 0 {
            let detail = serde_json::to_string(&counts).map_err(|e| corrupt("audit", e))?;
            append_audit(
                &mut tx,
                self.audit_key(),
                "import",
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
}

/// Inserts or updates one experiment, leaving an unchanged body untouched (compared as the
/// backend stores it: text on SQLite, `jsonb` on PostgreSQL, whatever the key order).
async fn upsert_one<C: Conn>(
    tx: &mut C,
    experiment: &Experiment,
    body: &str,
    now: DateTime<Utc>,
    counts: &mut UpsertCounts,
) -> Result<(), StoreError> {
    let same: Option<(bool,)> = tx
        .fetch_optional(
            Sql::new("SELECT body = $2 FROM experiments WHERE id = $1"),
            &[Arg::Text(&experiment.id), Arg::json(body)],
        )
        .await?;
    match same {
        Some((true,)) => counts.unchanged += 1,
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
    Ok(())
}
