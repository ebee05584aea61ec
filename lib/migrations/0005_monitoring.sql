-- Monitoring dashboard and maintenance mode (issue 6).

-- Operational switches that must survive a Redis outage. Maintenance mode lives in Redis
-- (read on the hot path) and here (read only when Redis is unreachable).
CREATE TABLE app_flags (
    name        text PRIMARY KEY,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The dashboard's rollup of settled days: per UTC day, provider and model, the totals of the
-- live generations rows plus the purge's usage_daily rows. A day is computed once, when it
-- is settled (ended more than 24 h ago), so each call scans only the last two days of raw
-- rows however large the table grows. monitoring_days marks computed days (a day without
-- generations has no monitoring_daily row but must not be recomputed on every call).
CREATE TABLE monitoring_days (
    day          date PRIMARY KEY,
    computed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE monitoring_daily (
    day            date NOT NULL REFERENCES monitoring_days (day) ON DELETE CASCADE,
    provider       text NOT NULL,
    model          text NOT NULL,
    requests       bigint NOT NULL,
    failed         bigint NOT NULL,
    input_tokens   bigint NOT NULL,
    output_tokens  bigint NOT NULL,
    cost_usd       numeric(18, 8) NOT NULL,
    PRIMARY KEY (day, provider, model)
);

-- trials_ending_7d: a range scan over trial end dates instead of the whole organizations table.
CREATE INDEX organizations_trial_ends_idx ON organizations (trial_ends_at) WHERE plan = 'TRIAL';
