-- The review surface: API tokens (only the SHA-256 of each secret is kept), the audit log's
-- keyed MACs and sealed head, the head each run published, and a listing index for keyset
-- pagination of the queue.
CREATE TABLE tokens (
    id         TEXT COLLATE "C" PRIMARY KEY,
    user_name  TEXT NOT NULL,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX tokens_user ON tokens (user_name);

ALTER TABLE audit_log ADD COLUMN mac TEXT;

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL,
    mac  TEXT NOT NULL
);

ALTER TABLE runs ADD COLUMN audit_seq BIGINT;
ALTER TABLE runs ADD COLUMN audit_hash TEXT;

CREATE INDEX proposals_listing ON proposals (priority DESC, id ASC);
