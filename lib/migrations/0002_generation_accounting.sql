-- Issue 3 (POST /api/generate): the quota counter and per-attempt accounting.

-- Generations reserved (pending) or succeeded per organization and UTC month. The quota is
-- enforced on this row, not on a COUNT over generations: one INSERT .. ON CONFLICT DO UPDATE
-- .. WHERE used < limit is atomic under concurrency (it re-checks the latest committed row),
-- and the count survives the purge of old generations.
CREATE TABLE generation_usage (
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    month            date NOT NULL,                     -- first day of the UTC month
    used             integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    quota_limit      integer NOT NULL,                  -- the plan's limit at the last reservation
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, month)
);

-- What happened to the primary provider (OpenAI) on this request, for the runbook's
-- "OpenAI errors" rate: succeeded | failed (an outage-class error: 429, 5xx, timeout,
-- connection, 401/403) | rejected (a 4xx caused by the request) | skipped (circuit open or
-- not configured). Every attempt, in order, is in `attempts`.
ALTER TABLE generations
    ADD COLUMN primary_outcome text
        CHECK (primary_outcome IN ('succeeded', 'failed', 'rejected', 'skipped')),
    ADD COLUMN attempts jsonb NOT NULL DEFAULT '[]'::jsonb;

-- Reservations that never completed (a function killed mid-call) are found by this.
CREATE INDEX generations_pending_idx ON generations (created_at) WHERE status = 'pending';
