-- Alert state (issue 14): one row per alerting metric, written by the alerts cron.
--
-- `level` is the current level and `since` when the metric entered it. A change of level (or
-- a reminder while critical) queues a notice: `notice` says which, `pending` lists the
-- channels it still has to reach. A run claims the row (`claimed_until`) before sending, so
-- two overlapping runs never send the same notice; a channel that failed stays in `pending`
-- (with `last_error`) and is retried by the next run.
CREATE TABLE alert_state (
    metric         text PRIMARY KEY,
    level          text NOT NULL CHECK (level IN ('ok', 'warning', 'critical')),
    since          timestamptz NOT NULL,
    value          jsonb,
    threshold      jsonb,
    detail         text,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    evaluated_at   timestamptz NOT NULL DEFAULT now(),
    notice         text CHECK (notice IN ('ok', 'warning', 'critical', 'reminder')),
    queued_at      timestamptz,
    pending        text[] NOT NULL DEFAULT '{}',
    notified_at    timestamptz,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    claimed_until  timestamptz,
    claim          uuid
);
