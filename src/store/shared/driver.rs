//! The one implementation of [`Conn`]: a pooled connection or a transaction of any sqlx
//! database that is a [`Driver`], i.e. that says how it stores the [`Typed`] values and reads
//! the rows that are its own. The `sqlx::Database` bounds this needs are written here once.

use super::{Arg, Conn, Fetch, Sql, Typed};
use crate::domain::{Proposal, Review};
use crate::history::Experiment;
use crate::store::{AuditEntry, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::{Arguments, Database, Encode, Executor, IntoArguments, Transaction, Type};

/// What one backend's database says its own way, below the statements: implemented by
/// `sqlite.rs` for [`sqlx::Sqlite`] and by `postgres.rs` for [`sqlx::Postgres`].
#[async_trait]
pub(crate) trait Driver: Database {
    /// Binds a value whose stored type differs between backends.
    fn typed(out: &mut Self::Arguments, value: Typed<'_>) -> Result<(), BoxDynError>;
    fn rows_affected(done: &Self::QueryResult) -> u64;
    fn decode<T: Fetch>(row: &Self::Row) -> Result<T, sqlx::Error>;

    /// The proposal with this id, as stored.
    async fn proposal(
        conn: &mut Self::Connection,
        id: &str,
    ) -> Result<Option<Proposal>, StoreError>;
    /// A proposal's reviews (`Some(id)`), or every review (`None`), oldest first.
    async fn reviews(
        conn: &mut Self::Connection,
        of: Option<&str>,
    ) -> Result<Vec<Review>, StoreError>;
    /// Up to `limit` audit entries after sequence number `after`, oldest first.
    async fn audit_entries(
        conn: &mut Self::Connection,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    /// See [`Conn::upsert_distinct`].
    async fn upsert_distinct(
        _conn: &mut Self::Connection,
        _batch: &[Experiment],
        _bodies: &[String],
        _now: DateTime<Utc>,
    ) -> Result<Option<Vec<(String, bool)>>, StoreError> {
        Ok(None)
    }
}

/// A pooled connection (each statement committed on its own) or a transaction.
pub(crate) enum Held<DB: Database> {
    Pooled(PoolConnection<DB>),
    Tx(Transaction<'static, DB>),
}

impl<DB: Database> Held<DB> {
    fn raw(&mut self) -> &mut DB::Connection {
        match self {
            Held::Pooled(conn) => conn,
            Held::Tx(tx) => tx,
        }
    }
}

/// A statement's arguments in `DB`'s types: the plain ones bound here, the [`Typed`] ones by
/// the driver.
fn arguments<DB>(args: &[Arg<'_>]) -> Result<DB::Arguments, StoreError>
where
    DB: Driver,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    let mut out = DB::Arguments::default();
    for arg in args {
        match *arg {
            Arg::Text(text) => out.add(text),
            Arg::OptText(text) => out.add(text),
            Arg::Int(n) => out.add(n),
            Arg::Real(x) => out.add(x),
            Arg::Typed(value) => DB::typed(&mut out, value),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(out)
}

#[async_trait]
impl<DB> Conn for Held<DB>
where
    DB: Driver,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    async fn execute(&mut self, sql: Sql, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let query = sqlx::query_with(sql.into_safe(), arguments::<DB>(args)?);
        Ok(DB::rows_affected(&query.execute(self.raw()).await?))
    }

    async fn fetch_one<T: Fetch>(&mut self, sql: Sql, args: &[Arg<'_>]) -> Result<T, StoreError> {
        let query = sqlx::query_with(sql.into_safe(), arguments::<DB>(args)?);
        Ok(DB::decode(&query.fetch_one(self.raw()).await?)?)
    }

    async fn fetch_optional<T: Fetch>(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> Result<Option<T>, StoreError> {
        let query = sqlx::query_with(sql.into_safe(), arguments::<DB>(args)?);
        let row = query.fetch_optional(self.raw()).await?;
        Ok(row.as_ref().map(DB::decode).transpose()?)
    }

    async fn fetch_all<T: Fetch>(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>, StoreError> {
        let query = sqlx::query_with(sql.into_safe(), arguments::<DB>(args)?);
        let rows = query.fetch_all(self.raw()).await?;
        Ok(rows.iter().map(DB::decode).collect::<Result<_, _>>()?)
    }

    async fn commit(self) -> Result<(), StoreError> {
        if let Held::Tx(tx) = self {
            tx.commit().await?;
        }
        Ok(())
    }

    async fn proposal(&mut self, id: &str) -> Result<Option<Proposal>, StoreError> {
        DB::proposal(self.raw(), id).await
    }

    async fn reviews(&mut self, of: Option<&str>) -> Result<Vec<Review>, StoreError> {
        DB::reviews(self.raw(), of).await
    }

    async fn audit_entries(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        DB::audit_entries(self.raw(), after, limit).await
    }

    async fn upsert_distinct(
        &mut self,
        batch: &[Experiment],
        bodies: &[String],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<(String, bool)>>, StoreError> {
        DB::upsert_distinct(self.raw(), batch, bodies, now).await
    }
}
