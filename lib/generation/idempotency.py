"""Idempotent retries of POST /api/generate: an `Idempotency-Key` header (1..255 printable
ASCII characters) scoped to the caller's organization for 24 h.

- same key, same body, first request done: its stored 200 is answered again (the edge adds
  `Idempotent-Replayed: true`); the provider is not called and no quota is spent;
- same key while the first request runs: 409 `idempotency_in_progress`;
- same key, different body (canonical JSON, so key order and spacing don't matter):
  422 `idempotency_mismatch`, whether the first is running or done.

Only a served generation is stored. A request that failed before the provider (402, 503,
bad input) stores nothing; neither does one the providers failed (502, or the provider's
400): those gave their unit of quota back, so a retry is allowed to try again.

Why Redis and not Postgres: the claim must be atomic (`SET NX`), the in-progress marker must
vanish by itself if the function dies mid-call (a short TTL; the row it would be in Postgres
would need a sweeper), and the 24 h expiry is Redis's own TTL with no purge job. A request
without the header costs nothing: no command is sent. With the header it costs one round
trip to claim (SET NX and GET in one pipeline) and one to store. Like every Redis use here it
fails open: with Redis unreachable the request is served without idempotency (reported);
the Postgres quota still holds.
"""

import hashlib
import json
from dataclasses import dataclass

from lib import redis
from lib.auth import Identity
from lib.errors import AppError, BadRequest
from lib.observability import report

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255
TTL_S = 24 * 3600
# The in-progress marker outlives any real request (vercel.json maxDuration is 30 s plus the
# cold start) but not by much: a function killed mid-call frees its key within this.
RUNNING_TTL_S = 120
_PREFIX = "idem:"


class InvalidIdempotencyKey(BadRequest):
    code, default_message = "invalid_idempotency_key", \
        f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters"


class IdempotencyInProgress(AppError):
    status, code, default_message = 409, "idempotency_in_progress", \
        "A request with this Idempotency-Key is still running; retry later"


class IdempotencyMismatch(AppError):
    status, code, default_message = 422, "idempotency_mismatch", \
        "This Idempotency-Key was used with a different request body"


def parse_key(value: str | None) -> str | None:
    """The header's value, None when absent; raises InvalidIdempotencyKey. Pure."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in value):
        raise InvalidIdempotencyKey()
    return value


@dataclass(frozen=True)
class Claim:
    """This request's hold on a key: `replay` is the stored response when it already ran."""

    redis_key: str
    fingerprint: str
    replay: dict | None = None


def fingerprint(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _redis_key(identity: Identity, key: str) -> str:
    scope = hashlib.sha256(f"{identity.tenant_external_id}\0{key}".encode()).hexdigest()
    return _PREFIX + scope


def claim(identity: Identity, key: str, body: dict) -> Claim | None:
    """Claim `key` for this request (one round trip), or find its stored response. Raises
    IdempotencyInProgress / IdempotencyMismatch. Returns None when Redis is unreachable
    (fail open: served without idempotency)."""
    redis_key, fp = _redis_key(identity, key), fingerprint(body)
    batch = redis.Batch()
    # SET key value NX EX (Batch passes positional arguments: nx, xx, get, ex)
    won = batch.add("set", redis_key, json.dumps({"fp": fp, "state": "running"}),
                    True, None, None, RUNNING_TTL_S)
    current = batch.add("get", redis_key)
    try:
        batch.run()
    except redis.RedisUnavailable as exc:
        report(exc, component="idempotency", fail_open=True)
        return None
    if won():
        return Claim(redis_key, fp)
    try:
        stored = json.loads(current() or "null")
    except ValueError:
        stored = None
    if not isinstance(stored, dict):  # expired between the two commands: a rare race
        raise IdempotencyInProgress()
    if stored.get("fp") != fp:
        raise IdempotencyMismatch()
    if stored.get("state") != "done":
        raise IdempotencyInProgress()
    return Claim(redis_key, fp, stored["response"])


def store(held: Claim | None, response: dict) -> None:
    """Keep the served response for TTL_S under the claimed key. Fails open (reported)."""
    if held is None or held.replay is not None:
        return
    value = json.dumps({"fp": held.fingerprint, "state": "done", "response": response})
    try:
        redis.call(redis.client().set, held.redis_key, value, ex=TTL_S)
    except redis.RedisUnavailable as exc:
        report(exc, component="idempotency")


def release(held: Claim | None) -> None:
    """Give the key back after a failure, so a retry runs again. Fails open: the marker then
    expires after RUNNING_TTL_S."""
    if held is None or held.replay is not None:
        return
    try:
        redis.call(redis.client().delete, held.redis_key)
    except redis.RedisUnavailable as exc:
        report(exc, component="idempotency")
