-- Tokens gain a kind: `person` (every token made before) or `agent` (an editor assistant or a
-- chat bot, `hypod token create --agent`), which may read and suggest drafts but never approve
-- or reject. The `token.create` audit entry records the kind, so a row changed by hand is refused.
ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'person' CHECK (kind IN ('person', 'agent'));
