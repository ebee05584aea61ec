-- The schema the runbook implies. Later issues add their own numbered files.

CREATE TABLE organizations (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- the id the frontend knows: the Clerk organization id, or the Clerk user id of a personal org
    external_id            text NOT NULL UNIQUE,
    is_personal            boolean NOT NULL DEFAULT false,
    name                   text,
    plan                   text NOT NULL DEFAULT 'TRIAL' CHECK (plan IN ('TRIAL', 'TEAM', 'AGENCY')),
    trial_ends_at          timestamptz,
    stripe_customer_id     text UNIQUE,
    stripe_subscription_id text,
    subscription_status    text CHECK (subscription_status IN ('trialing', 'active', 'past_due',
                               'canceled', 'unpaid', 'incomplete', 'incomplete_expired', 'paused')),
    current_period_end     timestamptz,
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organizations_plan_idx ON organizations (plan);

CREATE TABLE users (
    id                 text PRIMARY KEY,              -- Clerk user id (the token's sub)
    organization_id    uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email              text,
    role               text NOT NULL DEFAULT 'MEMBER' CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER')),
    reminders_opt_out  boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_organization_idx ON users (organization_id);

CREATE TABLE generations (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id          text REFERENCES users (id) ON DELETE SET NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    provider         text,
    model            text,
    input_tokens     integer NOT NULL DEFAULT 0,
    output_tokens    integer NOT NULL DEFAULT 0,
    cost_usd         numeric(14, 8) NOT NULL DEFAULT 0,
    price_version    text,
    latency_ms       integer,
    fallback         boolean NOT NULL DEFAULT false,
    fallback_reason  text,
    error_class      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
CREATE INDEX generations_org_created_idx ON generations (organization_id, created_at);
CREATE INDEX generations_created_idx ON generations (created_at);
CREATE INDEX generations_user_created_idx ON generations (user_id, created_at);

-- Daily rollup written by the purge before it deletes generations, so history survives.
CREATE TABLE usage_daily (
    day              date NOT NULL,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider         text NOT NULL DEFAULT '',
    model            text NOT NULL DEFAULT '',
    requests         bigint NOT NULL DEFAULT 0,
    failed           bigint NOT NULL DEFAULT 0,
    input_tokens     bigint NOT NULL DEFAULT 0,
    output_tokens    bigint NOT NULL DEFAULT 0,
    cost_usd         numeric(18, 8) NOT NULL DEFAULT 0,
    PRIMARY KEY (day, organization_id, provider, model)
);

CREATE TABLE stripe_events (
    id               text PRIMARY KEY,                -- Stripe's evt_... id
    type             text NOT NULL,
    created          timestamptz NOT NULL,            -- the event's own `created`
    outcome          text NOT NULL CHECK (outcome IN ('applied', 'ignored', 'unmatched', 'stale')),
    organization_id  uuid REFERENCES organizations (id) ON DELETE SET NULL,
    processed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_processed_idx ON stripe_events (processed_at);

CREATE TABLE reminder_deliveries (
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    iso_week     text NOT NULL,                       -- e.g. 2026-W49
    status       text NOT NULL CHECK (status IN ('sending', 'sent', 'failed')),
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    PRIMARY KEY (user_id, iso_week)
);
CREATE INDEX reminder_deliveries_created_idx ON reminder_deliveries (created_at);

CREATE TABLE cron_runs (
    id           bigserial PRIMARY KEY,
    job          text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
    complete     boolean,
    counts       jsonb NOT NULL DEFAULT '{}'::jsonb,
    error        text
);
CREATE INDEX cron_runs_job_started_idx ON cron_runs (job, started_at DESC);

CREATE TABLE ip_blocks (
    id          bigserial PRIMARY KEY,
    ip          inet NOT NULL,
    reason      text NOT NULL,
    source      text NOT NULL CHECK (source IN ('auto', 'manual')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ip_blocks_ip_idx ON ip_blocks (ip, expires_at DESC);
CREATE INDEX ip_blocks_expires_idx ON ip_blocks (expires_at);
CREATE INDEX ip_blocks_created_idx ON ip_blocks (created_at);
