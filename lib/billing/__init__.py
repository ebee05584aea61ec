"""Subscription billing through Stripe webhooks: TRIAL, TEAM and AGENCY.

The route (lib.routes.stripe) calls `webhook.read_event` (`signature` verifies, `events` parses
the verified payload into plain values), then `ledger.apply_event`, which applies the event
to Postgres exactly once and in order. Only `signature` touches the stripe SDK, and only when
a webhook arrives.
"""

# Every status a Stripe subscription can have: the one list (billing, monitoring). Here rather
# than in `events` so that naming it loads nothing.
STATUSES = ("trialing", "active", "past_due", "canceled", "unpaid", "incomplete",
            "incomplete_expired", "paused")
