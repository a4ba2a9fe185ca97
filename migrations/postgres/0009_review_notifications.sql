-- Review notifications: an approval that decides a proposal, or a rejection, queues a
-- notification in the review's own transaction. An outbox row is now about a run (`run_id`)
-- or about a review (`proposal_id` and the review as recorded, JSON), never both.
ALTER TABLE outbox ALTER COLUMN run_id DROP NOT NULL;
ALTER TABLE outbox ADD COLUMN proposal_id TEXT COLLATE "C" REFERENCES proposals (id);
ALTER TABLE outbox ADD COLUMN review TEXT;
ALTER TABLE outbox ADD CONSTRAINT outbox_one_subject
    CHECK ((run_id IS NULL) <> (proposal_id IS NULL AND review IS NULL));
