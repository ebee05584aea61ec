"""Stripe-Signature verification with the stripe SDK (imported here, lazily: ~340 ms)."""

from lib.errors import InvalidJson, InvalidSignature

TOLERANCE_S = 300  # Stripe's default: a signed payload older than this is a replay


def verify_signature(body: bytes, header: str | None, secrets: tuple[str, ...]) -> str:
    """The body as text when `header` signs it with any of `secrets` (several during a secret
    rotation) within TOLERANCE_S; else raise InvalidSignature (400). Pure, no I/O."""
    if not header or not header.strip():
        raise InvalidSignature("Missing Stripe-Signature header")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("Request body is not UTF-8 JSON") from None
    import stripe

    expired = False
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=TOLERANCE_S)
            return payload
        except stripe.SignatureVerificationError as exc:
            # The SDK checks the signature before the timestamp, so this one means "signed
            # with this secret, but too old": a replay, or a delivery stuck for over 5 minutes.
            expired = expired or str(exc).startswith("Timestamp outside the tolerance zone")
    if expired:
        raise InvalidSignature(f"Stripe-Signature timestamp is older than {TOLERANCE_S} s")
    raise InvalidSignature("Stripe-Signature does not match the payload with any configured secret")
