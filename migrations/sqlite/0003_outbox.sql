-- The notification outbox: one row per recorded run, written in the run's own transaction, so
-- a run is never recorded without its notification nor notified without being recorded. The
-- daemon delivers rows (retrying with backoff) when `notify.webhook_url` is set.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT NOT NULL UNIQUE REFERENCES runs (id),
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    REAL,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
