-- The push outbox: one row per approved proposal to be created as a draft experiment in
-- GrowthBook (`[export.growthbook]`), written in the approving review's own transaction (or by
-- `hypod export --push`). A row is claimed and held while it is posted (`next_attempt_at` moved
-- ahead, `attempts` counted), retried with backoff on 429/5xx, and ends `pushed` (with
-- GrowthBook's experiment id and URL) or `refused` (with GrowthBook's message). The proposal is
-- the key: a proposal is pushed at most once.
CREATE TABLE pushes (
    proposal_id     TEXT PRIMARY KEY REFERENCES proposals (id),
    platform        TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    created_at      DOUBLE PRECISION NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    finished_at     DOUBLE PRECISION,
    experiment_id   TEXT,
    experiment_url  TEXT,
    http_status     BIGINT,
    last_error      TEXT
);
CREATE INDEX pushes_due ON pushes (state, next_attempt_at);
