"""POST /api/webhooks/stripe: verify, parse, apply once."""

from lib.billing import events, ledger
from lib.billing.signature import verify_signature
from lib.config import settings
from lib.errors import ConfigError, DatabaseUnavailable, WebhookNotApplied
from lib.http import Request


def receive_stripe_webhook(request: Request) -> dict:
    """Verify the Stripe-Signature over the raw body, then apply the event exactly once.

    400 for a missing/bad/expired signature or a payload that is not an event (nothing
    written); 500 `config_error` when STRIPE_WEBHOOK_SECRET is unset (fail closed); 500
    `webhook_not_applied` when Postgres fails, with the event left unrecorded so Stripe's
    retry applies it. Redeliveries answer 200 without a second effect.
    """
    secrets = settings().stripe_webhook_secrets
    if not secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRET is not set; every webhook is refused")
    payload = verify_signature(request.body(), request.headers.get("stripe-signature"), secrets)
    event = events.parse_event(payload)
    try:
        outcome = ledger.apply_event(event)
    except DatabaseUnavailable as exc:
        raise WebhookNotApplied() from exc
    if event.type not in events.HANDLED_TYPES:
        return {"received": True, "ignored": True}
    if outcome == ledger.DUPLICATE:
        return {"received": True, "duplicate": True}
    return {"received": True, "outcome": outcome}
