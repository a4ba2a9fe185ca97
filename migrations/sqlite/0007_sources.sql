-- History sources (`[[source]]`, `hypod sync`): each source's incremental state, the ids it
-- listed at its last good sync (so that experiments that vanished from it are reported) and
-- when that sync was; and which source last wrote each experiment (NULL: an import).
CREATE TABLE sources (
    name       TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    listed     TEXT NOT NULL,
    last_ok_at TEXT NOT NULL
);
ALTER TABLE experiments ADD COLUMN source TEXT;
