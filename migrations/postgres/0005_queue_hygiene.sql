-- Queue hygiene: a proposal a run superseded links to the proposal that replaced it.
ALTER TABLE proposals ADD COLUMN superseded_by TEXT;
CREATE INDEX proposals_pending_created ON proposals (status, created_at);
