"""A Stripe webhook delivery as plain values: verify the signature over the raw body, parse."""

from lib.billing import events
from lib.billing.signature import verify_signature
from lib.config import settings
from lib.errors import ConfigError


def read_event(body: bytes, signature_header: str | None) -> events.Event:
    """The verified, parsed event of one delivery.

    Raises BadRequest subclasses for a missing/bad/expired signature or a payload that is not
    an event, and ConfigError when STRIPE_WEBHOOK_SECRET is unset (fail closed).
    """
    secrets = settings().stripe_webhook_secrets
    if not secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRET is not set; every webhook is refused")
    return events.parse_event(verify_signature(body, signature_header, secrets))
