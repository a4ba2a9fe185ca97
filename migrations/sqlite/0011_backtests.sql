-- The results of `hypod backtest` (its --json view, as text), newest last: the runs page draws
-- its calibration chart from the latest one.
CREATE TABLE backtests (
    id       TEXT PRIMARY KEY,
    ran_at   TEXT NOT NULL,
    proposer TEXT NOT NULL,
    result   TEXT NOT NULL
);
CREATE INDEX backtests_ran_at ON backtests (ran_at);
