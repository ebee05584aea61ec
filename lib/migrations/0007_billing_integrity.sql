-- Billing integrity and plan-bound retention (issue 11 §3-§5, issue 10 §6).

-- Every Stripe customer linked to an organization, each to exactly one (the primary key). An
-- organization may have several customers (a later checkout under a new customer adds one
-- and never replaces the first); organizations.stripe_customer_id stays the first link.
CREATE TABLE stripe_customers (
    id               text PRIMARY KEY,                -- cus_...
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    linked_at        timestamptz NOT NULL,            -- the linking event's `created`
    linked_by_event  text
);
CREATE INDEX stripe_customers_org_idx ON stripe_customers (organization_id);
INSERT INTO stripe_customers (id, organization_id, linked_at)
SELECT stripe_customer_id, id, coalesce(stripe_customer_linked_at, updated_at)
FROM organizations WHERE stripe_customer_id IS NOT NULL
ON CONFLICT (id) DO NOTHING;

-- Whether any snapshot of the subscription showed it past `incomplete` (trialing, active, ...).
-- Only such a subscription ends the free trial; an OR over the events received, so it
-- doesn't depend on the order they arrived in.
ALTER TABLE stripe_subscriptions ADD COLUMN ever_active boolean NOT NULL DEFAULT false;
UPDATE stripe_subscriptions SET ever_active = true
WHERE status IS NOT NULL AND status NOT IN ('incomplete', 'incomplete_expired');

-- `conflict`: the event names an organization other than the one its subscription or customer
-- belongs to; applied to nobody. `rejected`: a signed payload that can never be stored (NUL,
-- lone surrogates); recorded so Stripe's retries end.
ALTER TABLE stripe_events DROP CONSTRAINT IF EXISTS stripe_events_outcome_check;
ALTER TABLE stripe_events ADD CONSTRAINT stripe_events_outcome_check
    CHECK (outcome IN ('applied', 'ignored', 'unmatched', 'stale', 'conflict', 'rejected'));
CREATE INDEX stripe_events_conflict_idx ON stripe_events (processed_at) WHERE outcome = 'conflict';

-- A generation keeps the retention of the plan in force when it was created. The trigger sets
-- it from the organization on insert, so no insert statement has to name it.
ALTER TABLE generations ADD COLUMN plan text CHECK (plan IN ('TRIAL', 'TEAM', 'AGENCY'));
UPDATE generations g SET plan = o.plan FROM organizations o WHERE o.id = g.organization_id;
ALTER TABLE generations ALTER COLUMN plan SET NOT NULL;

CREATE FUNCTION generations_set_plan() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.plan IS NULL THEN
        SELECT plan INTO NEW.plan FROM organizations WHERE id = NEW.organization_id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER generations_set_plan BEFORE INSERT ON generations
    FOR EACH ROW EXECUTE FUNCTION generations_set_plan();
CREATE INDEX generations_plan_created_idx ON generations (plan, created_at);
