-- Slots: one row per run that ever claimed one (scheduled, manual, API). The key is unique, so
-- a slot is claimed once; the lease (seconds since the epoch, on the database's clock) and the
-- fencing token decide who may commit. Rows are never pruned.
CREATE TABLE slots (
    key           TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    owner         TEXT NOT NULL,
    token         INTEGER NOT NULL,
    lease_expires REAL NOT NULL,
    takeovers     INTEGER NOT NULL DEFAULT 0,
    claimed_at    REAL NOT NULL,
    finished_at   REAL,
    run_id        TEXT,
    reason        TEXT
);
CREATE INDEX slots_running ON slots (status, lease_expires);
