"""Clerk session tokens: verification and the caller's identity.

A Clerk session token is an RS256 JWT. It is verified without a network call against
CLERK_JWT_KEY (the PEM public key from the Clerk dashboard, Clerk's documented networkless
way); without it, against Clerk's JWKS fetched with CLERK_SECRET_KEY and cached for the life
of the process (a warm invocation never refetches; an unknown `kid` refetches at most once per
_JWKS_REFRESH_S, which covers key rotation without letting forged kids hammer Clerk). A failed
or slow fetch is remembered with backoff (_JWKS_BACKOFF_S, doubling), so a Clerk outage costs
one fetch per backoff, not one per request; no lock is held across the network call, so a
valid token never waits behind someone else's fetch; and while a key set is cached, a token
whose `kid` isn't in it is a 401, whatever the refresh did.

Only RS256 is accepted: `alg: none`, HS256 (including HS256 "signed" with the public key)
and any other algorithm are rejected before a key is even chosen. A session still `pending`
(`sts`, e.g. organization selection not finished) is a 403. In production an unset
CLERK_AUTHORIZED_PARTIES fails closed: any token from any origin would otherwise do. PyJWT
is used directly, not Clerk's SDK: `clerk-backend-api` imports in about 3.6 s (its generated
pydantic models), which every cold start of every route that authenticates would pay.
"""

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from lib.config import per_settings, settings
from lib.errors import AuthUnavailable, ConfigError, Forbidden, Unauthorized
from lib.observability import report

ROLES = ("OWNER", "ADMIN", "MEMBER")
LEEWAY_S = 5  # Clerk's own SDK allows 5 s of clock skew; session tokens live 60 s
_MAX_TOKEN_CHARS = 8192
_MAX_ID_CHARS = 128
_JWKS_REFRESH_S = 60.0
_JWKS_TIMEOUT_S = 3.0
_JWKS_BACKOFF_S = 2.0  # after a failed fetch; doubles per failure in a row
_JWKS_MAX_BACKOFF_S = 60.0


class SessionPending(Forbidden):
    code, default_message = "session_pending", "The session is pending; finish signing in"


@dataclass(frozen=True)
class Identity:
    """Who is calling, from a verified token. `org_external_id` is the active Clerk
    organization, or None when the user has none (a personal organization is used then)."""

    user_id: str
    org_external_id: str | None
    email: str | None
    role: str
    session_id: str | None = None

    @property
    def tenant_external_id(self) -> str:
        """The organization this call is charged to: the active Clerk org, else the user's own."""
        return self.org_external_id or self.user_id

    @property
    def is_personal(self) -> bool:
        return self.org_external_id is None


def authenticate(token: str | None) -> Identity:
    """The Identity of a Clerk session token (the edge reads it from `Authorization: Bearer`).

    Raises Unauthorized (401) for a missing, malformed, forged, expired or not-yet-valid
    token, or one whose `azp` is not in CLERK_AUTHORIZED_PARTIES (when that is set);
    SessionPending (403) for a `pending` session; AuthUnavailable (503) when no JWKS could
    be fetched; ConfigError when neither CLERK_JWT_KEY nor CLERK_SECRET_KEY is set, or in
    production without CLERK_AUTHORIZED_PARTIES (checked first: every call fails closed).
    No side effects besides the JWKS cache.
    """
    cfg = settings()
    if cfg.environment == "production" and not cfg.clerk_authorized_parties:
        raise ConfigError("CLERK_AUTHORIZED_PARTIES must be set in production")
    if not token:
        raise Unauthorized("Missing bearer token")
    return identity_from_claims(verify_session_token(token))


def require_role(identity: Identity, *roles: str) -> None:
    """Raise Forbidden (403) unless the identity's role is one of `roles`."""
    if identity.role not in roles:
        raise Forbidden(f"Requires role {' or '.join(roles)}")


class _Verified:
    """Tokens this process already verified, with their claims, until they expire: a client
    sends the same session token (Clerk's live 60 s) with each request of that minute, and
    the RS256 check costs about 0.2 ms of CPU each time (bench/generate). An entry is used
    only under the settings it was verified with (a changed key or allowlist starts over) and
    only while the token is valid by the same rule jwt.decode applies (now < exp + LEEWAY_S);
    a key removed from Clerk's JWKS meanwhile is not re-checked for tokens already seen,
    which stay valid at most until their exp. Bounded: the oldest entries go first."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, tuple[object, float, dict]] = {}
        self._lock = threading.Lock()

    def get(self, token: str, cfg) -> dict | None:
        entry = self._entries.get(token)
        if entry is None or entry[0] is not cfg or time.time() >= entry[1]:
            return None
        return dict(entry[2])

    def put(self, token: str, cfg, claims: dict) -> None:
        with self._lock:
            while len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[token] = (cfg, float(claims["exp"]) + LEEWAY_S, dict(claims))


_verified = _Verified()


def verify_session_token(token: str) -> dict:
    """The verified claims of a Clerk session token (see `authenticate` for what is checked;
    `_Verified` for the tokens already seen)."""
    if len(token) > _MAX_TOKEN_CHARS:
        raise Unauthorized("Invalid token")
    cfg = settings()
    known = _verified.get(token, cfg)
    if known is not None:
        return known
    claims = _verify(token, cfg)
    _verified.put(token, cfg, claims)
    return claims


def _verify(token: str, cfg) -> dict:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid token") from None
    if header.get("alg") != "RS256":
        raise Unauthorized("Invalid token algorithm")
    key = _pem_key(cfg.clerk_jwt_key) if cfg.clerk_jwt_key else _jwks_key(header.get("kid"))
    try:
        claims = jwt.decode(token, key, algorithms=["RS256"], leeway=LEEWAY_S,
                            options={"require": ["exp", "sub"], "verify_aud": False,
                                     "verify_iss": False})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("Token not valid yet") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid token") from None
    parties = cfg.clerk_authorized_parties
    # As Clerk's SDK does: with an allowlist set, a token without `azp` is refused too.
    if parties and claims.get("azp") not in parties:
        raise Unauthorized("Token issued for another origin")
    if claims.get("sts") == "pending":
        raise SessionPending()
    return claims


def _id(value, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > _MAX_ID_CHARS or not value.isprintable():
        raise Unauthorized(f"Invalid {name} claim")
    return value


def identity_from_claims(claims: dict) -> Identity:
    """Map Clerk's claims (v1 or v2 session tokens) to an Identity. Pure."""
    user_id = _id(claims.get("sub"), "sub")
    if not user_id:
        raise Unauthorized("Invalid sub claim")
    org = claims.get("o") if claims.get("v") == 2 else None
    org_id = org.get("id") if isinstance(org, dict) else claims.get("org_id")
    email = claims.get("email")
    email = email.strip()[:320] or None if isinstance(email, str) else None
    metadata = claims.get("metadata")
    role = metadata.get("role") if isinstance(metadata, dict) else None
    role = role.upper() if isinstance(role, str) and role.upper() in ROLES else "MEMBER"
    session_id = claims.get("sid") if isinstance(claims.get("sid"), str) else None
    return Identity(user_id=user_id, org_external_id=_id(org_id, "org"), email=email,
                    role=role, session_id=session_id)


@lru_cache(maxsize=4)
def _pem_key(pem: str):
    try:
        return load_pem_public_key(pem.encode())
    except ValueError:
        raise ConfigError("CLERK_JWT_KEY is not a PEM public key") from None


class _Jwks:
    """One Clerk instance's signing keys by kid, fetched once and refreshed on an unknown kid.
    One per settings value (`_jwks`): keys of one Clerk instance never verify another's tokens.

    The lock guards only the state; the fetch runs outside it, by one thread at a time
    (`_fetching`). Others don't wait for it when they can be answered from the cached keys;
    only with nothing cached yet do they wait for the one fetch in flight (a cold start)."""

    def __init__(self, api_url: str, secret: str, refresh_s: float = _JWKS_REFRESH_S):
        self._scope = (api_url, secret)
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._keys: dict[str, object] = {}
        self._fetched_at = float("-inf")  # last attempt, successful or not
        self._retry_at = float("-inf")  # no attempt before this (backoff after failures)
        self._failures = 0
        self._fetching: threading.Event | None = None

    def _lookup(self, kid: str | None):
        if kid:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def key(self, kid: str | None):
        """The key for `kid`. Unauthorized when it isn't Clerk's; AuthUnavailable when there
        are no keys at all to tell (the fetch failed, or is backing off)."""
        with self._lock:
            key = self._lookup(kid)
            if key is not None:
                return key
            now = time.monotonic()
            due = now >= self._retry_at and now - self._fetched_at >= (
                self._refresh_s if self._keys else 0)
            in_flight = self._fetching
            if in_flight is None and due:
                in_flight = self._fetching = threading.Event()
                fetch_here = True
            else:
                fetch_here = False
        if fetch_here:
            self._refresh(in_flight)
        elif in_flight is not None and not self._keys:
            in_flight.wait(_JWKS_TIMEOUT_S * 2)  # a cold start: the first fetch serves everyone
        with self._lock:
            key, cached = self._lookup(kid), bool(self._keys)
        if key is not None:
            return key
        if cached:
            raise Unauthorized("Invalid token")
        raise AuthUnavailable()

    def _refresh(self, done: threading.Event) -> None:
        keys: dict[str, object] | None = None
        try:
            keys = self._fetch(*self._scope)
        except Exception as exc:  # noqa: BLE001 - any failure must end the fetch and back off
            failure = exc
        with self._lock:
            self._fetched_at = time.monotonic()
            if keys is not None:
                self._keys, self._failures, self._retry_at = keys, 0, float("-inf")
            else:
                self._failures += 1
                delay = min(_JWKS_MAX_BACKOFF_S, _JWKS_BACKOFF_S * 2 ** (self._failures - 1))
                self._retry_at = self._fetched_at + delay
            self._fetching = None
        done.set()
        if keys is None:
            report(failure, component="jwks", failures=self._failures)

    @staticmethod
    def _fetch(api_url: str, secret: str) -> dict[str, object]:
        try:
            response = httpx.get(f"{api_url}/v1/jwks", timeout=_JWKS_TIMEOUT_S,
                                 headers={"Authorization": f"Bearer {secret}"})
            response.raise_for_status()
            keys = response.json().get("keys") or []
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise AuthUnavailable() from exc
        parsed = {}
        for jwk in keys:
            if isinstance(jwk, dict) and jwk.get("kty") == "RSA" and jwk.get("kid"):
                try:
                    parsed[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="RS256").key
                except jwt.PyJWKError:
                    continue
        return parsed


@per_settings
def _jwks(cfg) -> _Jwks:
    if not cfg.clerk_secret_key:
        raise ConfigError("CLERK_JWT_KEY or CLERK_SECRET_KEY must be set")
    return _Jwks(cfg.clerk_api_url, cfg.clerk_secret_key)


def _jwks_key(kid):
    return _jwks().key(kid if isinstance(kid, str) else None)
