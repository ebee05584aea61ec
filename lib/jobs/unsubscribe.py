"""Signed unsubscribe links for the reminder emails.

A token is `<user id, base64url>.<HMAC-SHA256 of it, base64url>`, keyed by UNSUBSCRIBE_SECRET
or, when that is unset, by a key derived from CRON_SECRET (so rotating CRON_SECRET alone
invalidates links already sent; set UNSUBSCRIBE_SECRET to keep them across rotations).
Nobody without the key can make a token for another user. Tokens don't expire: an old
email's link must keep working.

The frontend's unsubscribe page (not one of this backend's routes) consumes the token by
calling `opt_out_with_token`.
"""

import base64
import binascii
import hashlib
import hmac

from lib import db, errors
from lib.config import settings

_PURPOSE = b"ascendos/unsubscribe/v1"


class InvalidUnsubscribeToken(errors.BadRequest):
    code, default_message = "invalid_unsubscribe_token", "This unsubscribe link is not valid"


def _key() -> bytes:
    cfg = settings()
    if cfg.unsubscribe_secret:
        return cfg.unsubscribe_secret.encode()
    if not cfg.cron_secret:
        raise errors.ConfigError("UNSUBSCRIBE_SECRET or CRON_SECRET must be set to sign unsubscribe links")
    return hmac.new(cfg.cron_secret.encode(), _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(user_id: str) -> bytes:
    return hmac.new(_key(), _PURPOSE + b"\0" + user_id.encode(), hashlib.sha256).digest()


def unsubscribe_token(user_id: str) -> str:
    """The token that opts `user_id` out of reminders. Deterministic for a given key."""
    return f"{_b64(user_id.encode())}.{_b64(_signature(user_id))}"


def unsubscribe_url(user_id: str) -> str:
    return f"{settings().app_url}/unsubscribe?token={unsubscribe_token(user_id)}"


def verify_unsubscribe_token(token: str) -> str:
    """The user id a token was issued for. Raises InvalidUnsubscribeToken for anything that
    was not signed with the current key (compared in constant time)."""
    if not isinstance(token, str) or len(token) > 512 or token.count(".") != 1:
        raise InvalidUnsubscribeToken()
    encoded_user, encoded_signature = token.split(".")
    try:
        user_id = _unb64(encoded_user).decode()
        signature = _unb64(encoded_signature)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidUnsubscribeToken() from None
    if not user_id or not hmac.compare_digest(signature, _signature(user_id)):
        raise InvalidUnsubscribeToken()
    return user_id


def opt_out_with_token(token: str) -> str:
    """Opt the token's user out of reminder emails; returns the user id.

    Idempotent (opting out twice is fine). Raises InvalidUnsubscribeToken for a forged or
    malformed token, NotFound when the user no longer exists.
    """
    user_id = verify_unsubscribe_token(token)
    row = db.fetchone(
        "UPDATE users SET reminders_opt_out = true, updated_at = now() WHERE id = %s RETURNING id",
        (user_id,))
    if row is None:
        raise errors.NotFound("No such user")
    return user_id
