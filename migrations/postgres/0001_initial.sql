-- hypod's queue on PostgreSQL: the same logical schema as migrations/sqlite/0001_initial.sql
-- (experiments, runs, proposals, reviews, the append-only hash-chained audit log) with
-- PostgreSQL types. Text keys sort bytewise (COLLATE "C") as they do on SQLite, so listings come
-- out in the same order on both backends. JSON bodies are jsonb; the audit detail stays text
-- because it is hashed byte for byte. Times are timestamptz (microseconds, as hypod stores them).
CREATE TABLE experiments (
    id          TEXT COLLATE "C" PRIMARY KEY,
    moment      TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        JSONB NOT NULL,
    imported_at TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE runs (
    id          TEXT COLLATE "C" PRIMARY KEY,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    proposer    TEXT NOT NULL,
    record      JSONB NOT NULL
);
CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE proposals (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    run_id             TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
    status             TEXT NOT NULL,
    moment             TEXT NOT NULL,
    segment            TEXT NOT NULL,
    lever              TEXT NOT NULL,
    priority           DOUBLE PRECISION NOT NULL,
    approvals_required INTEGER NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    body               JSONB NOT NULL
);
CREATE INDEX proposals_status ON proposals (status, priority DESC);
CREATE INDEX proposals_run ON proposals (run_id);

CREATE TABLE reviews (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    proposal_id TEXT COLLATE "C" NOT NULL REFERENCES proposals (id),
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    note        TEXT,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX reviews_proposal ON reviews (proposal_id);
CREATE INDEX reviews_at ON reviews (at);

CREATE TABLE audit_log (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
