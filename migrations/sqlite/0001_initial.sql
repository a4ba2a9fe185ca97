-- hypod's queue on SQLite: experiments (the imported history), runs, proposals, reviews, and
-- the append-only, hash-chained audit log. JSON bodies are TEXT; columns hold what is filtered on.
CREATE TABLE experiments (
    id          TEXT PRIMARY KEY,
    moment      TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    proposer    TEXT NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE proposals (
    id                 TEXT PRIMARY KEY,
    run_id             TEXT NOT NULL REFERENCES runs (id),
    status             TEXT NOT NULL,
    moment             TEXT NOT NULL,
    segment            TEXT NOT NULL,
    lever              TEXT NOT NULL,
    priority           REAL NOT NULL,
    approvals_required INTEGER NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    body               TEXT NOT NULL
);
CREATE INDEX proposals_status ON proposals (status, priority DESC);
CREATE INDEX proposals_run ON proposals (run_id);

CREATE TABLE reviews (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    proposal_id TEXT NOT NULL REFERENCES proposals (id),
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    note        TEXT,
    at          TEXT NOT NULL
);
CREATE INDEX reviews_proposal ON reviews (proposal_id);
CREATE INDEX reviews_at ON reviews (at);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
