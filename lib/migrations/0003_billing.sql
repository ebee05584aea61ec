-- Billing (issue 4): one row per Stripe subscription, so events can arrive in any order.
--
-- A subscription's state is the newest full snapshot (customer.subscription.* events), plus
-- the newest invoice outcome when it is newer than that snapshot. Both are kept with the
-- event that carried them, so an older event can be recognised as stale. Rows whose customer
-- is not linked to an organization yet are kept (organization_id NULL) and adopted when
-- checkout.session.completed links the customer.

ALTER TABLE organizations ADD COLUMN stripe_customer_linked_at timestamptz;

CREATE TABLE stripe_subscriptions (
    id                      text PRIMARY KEY,               -- sub_...
    customer_id             text NOT NULL,
    organization_id         uuid REFERENCES organizations (id) ON DELETE SET NULL,
    created                 timestamptz,                    -- the subscription's own `created`
    price_id                text,
    plan                    text CHECK (plan IN ('TEAM', 'AGENCY')),
    -- effective state: the snapshot with the newer invoice outcome folded in (NULL = no snapshot yet)
    status                  text CHECK (status IN ('trialing', 'active', 'past_due', 'canceled',
                                'unpaid', 'incomplete', 'incomplete_expired', 'paused')),
    current_period_end      timestamptz,
    cancel_at_period_end    boolean NOT NULL DEFAULT false,
    -- the newest subscription snapshot and the event that carried it
    snapshot_status         text,
    snapshot_period_end     timestamptz,
    snapshot_event_id       text,
    snapshot_event_created  timestamptz,
    -- the newest invoice outcome and the event that carried it
    invoice_outcome         text CHECK (invoice_outcome IN ('paid', 'failed')),
    invoice_period_end      timestamptz,
    invoice_event_id        text,
    invoice_event_created   timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_subscriptions_org_idx ON stripe_subscriptions (organization_id);
CREATE INDEX stripe_subscriptions_customer_idx ON stripe_subscriptions (customer_id);
