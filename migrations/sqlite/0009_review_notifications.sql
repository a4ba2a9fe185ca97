-- Review notifications: an approval that decides a proposal, or a rejection, queues a
-- notification in the review's own transaction. An outbox row is now about a run (`run_id`)
-- or about a review (`proposal_id` and the review as recorded, JSON), never both. SQLite
-- cannot drop a NOT NULL, so the table is rebuilt (nothing references it).
CREATE TABLE outbox_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT UNIQUE REFERENCES runs (id),
    proposal_id     TEXT REFERENCES proposals (id),
    review          TEXT,
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    REAL,
    last_error      TEXT,
    CHECK ((run_id IS NULL) <> (proposal_id IS NULL AND review IS NULL))
);
INSERT INTO outbox_new (id, run_id, created_at, next_attempt_at, attempts, delivered_at, last_error)
    SELECT id, run_id, created_at, next_attempt_at, attempts, delivered_at, last_error FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
