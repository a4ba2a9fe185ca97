-- The results of `hypod backtest` (its --json view), newest last: the runs page draws its
-- calibration chart from the latest one. The result is JSON kept as text and the time RFC 3339
-- text, read back the same way on both backends.
CREATE TABLE backtests (
    id       TEXT COLLATE "C" PRIMARY KEY,
    ran_at   TEXT NOT NULL,
    proposer TEXT NOT NULL,
    result   TEXT NOT NULL
);
CREATE INDEX backtests_ran_at ON backtests (ran_at);
