"""POST /api/webhooks/stripe: the Stripe-Signature header and the raw body in, the ledger's
outcome as JSON out. Verification is lib.billing.webhook's, applying lib.billing.ledger's."""

from lib.billing import events, ledger, webhook
from lib.errors import DatabaseUnavailable, WebhookNotApplied
from lib.http import Request


def stripe(request: Request) -> dict:
    """Verify the Stripe-Signature over the raw body, then apply the event exactly once.

    400 for a missing/bad/expired signature or a payload that is not an event (nothing
    written); 500 `config_error` when STRIPE_WEBHOOK_SECRET is unset (fail closed); 500
    `webhook_not_applied` when Postgres fails, with the event left unrecorded so Stripe's
    retry applies it. Redeliveries answer 200 without a second effect. A signed event whose
    strings hold NUL or lone surrogates is 200 `rejected` (recorded and reported, so Stripe
    stops retrying a payload that can never be stored).
    """
    event = webhook.read_event(request.body(), request.headers.get("stripe-signature"))
    try:
        outcome = ledger.apply_event(event)
    except DatabaseUnavailable as exc:
        raise WebhookNotApplied() from exc
    if event.type not in events.HANDLED_TYPES and outcome != ledger.REJECTED:
        return {"received": True, "ignored": True}
    if outcome == ledger.DUPLICATE:
        return {"received": True, "duplicate": True}
    return {"received": True, "outcome": outcome}
