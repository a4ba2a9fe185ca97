//! The backtests' results, for every backend: one row per `hypod backtest`, its `--json` view
//! kept as text and dated by the database's clock; the runs page reads the latest.

use super::{database_now, Arg, Conn, Dialect, Sql};
use crate::store::{corrupt, timestamp, BacktestRecord, Backtests, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl<D: Dialect> Backtests for D {
    async fn record_backtest(&self, backtest: &BacktestRecord) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let now = database_now::<D, _>(&mut conn).await?;
        let result =
            serde_json::to_string(&backtest.result).map_err(|e| corrupt("backtest result", e))?;
        conn.execute(
            Sql::new(
                "INSERT INTO backtests (id, ran_at, proposer, result) VALUES ($1, $2, $3, $4)",
            ),
            &[
                Arg::Text(&backtest.id),
                Arg::Text(&timestamp(now)),
                Arg::Text(&backtest.proposer),
                Arg::Text(&result),
            ],
        )
        .await?;
        Ok(())
    }

    async fn last_backtest(&self) -> Result<Option<BacktestRecord>, StoreError> {
        let row: Option<(String, String, String, String)> = self
            .connection()
            .await?
            .fetch_optional(
                Sql::new(
                    "SELECT id, ran_at, proposer, result FROM backtests \
                     ORDER BY ran_at DESC, id DESC LIMIT 1",
                ),
                &[],
            )
            .await?;
        let Some((id, ran_at, proposer, result)) = row else {
            return Ok(None);
        };
        let what = format!("backtest {id}");
        Ok(Some(BacktestRecord {
            ran_at: DateTime::parse_from_rfc3339(&ran_at)
                .map_err(|e| corrupt(&what, e))?
                .with_timezone(&Utc),
            result: serde_json::from_str(&result).map_err(|e| corrupt(&what, e))?,
            id,
            proposer,
        }))
    }
}
