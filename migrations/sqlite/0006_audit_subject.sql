-- The audit log vouches for identity and content: a token's or a proposal's own entries are
-- looked up by subject at use (a bearer token on every request, a draft at approval and
-- export), through this index instead of a scan of the log.
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
