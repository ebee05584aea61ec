"""Clerk session tokens: verification and the caller's identity.

A Clerk session token is an RS256 JWT. It is verified without a network call against
CLERK_JWT_KEY (the PEM public key from the Clerk dashboard, Clerk's documented networkless
way); without it, against Clerk's JWKS fetched with CLERK_SECRET_KEY and cached for the life
of the process (a warm invocation never refetches; an unknown `kid` refetches at most once per
_JWKS_REFRESH_S, which covers key rotation without letting forged kids hammer Clerk).

Only RS256 is accepted: `alg: none`, HS256 (including HS256 "signed" with the public key)
and any other algorithm are rejected before a key is even chosen. PyJWT is used directly,
not Clerk's SDK: `clerk-backend-api` imports in about 3.6 s (its generated pydantic models),
which every cold start of every route that authenticates would pay.
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

ROLES = ("OWNER", "ADMIN", "MEMBER")
LEEWAY_S = 5  # Clerk's own SDK allows 5 s of clock skew; session tokens live 60 s
_MAX_TOKEN_CHARS = 8192
_MAX_ID_CHARS = 128
_JWKS_REFRESH_S = 60.0
_JWKS_TIMEOUT_S = 3.0


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
    AuthUnavailable (503) when the JWKS can't be fetched; ConfigError when neither
    CLERK_JWT_KEY nor CLERK_SECRET_KEY is set. No side effects besides the JWKS cache.
    """
    if not token:
        raise Unauthorized("Missing bearer token")
    return identity_from_claims(verify_session_token(token))


def require_role(identity: Identity, *roles: str) -> None:
    """Raise Forbidden (403) unless the identity's role is one of `roles`."""
    if identity.role not in roles:
        raise Forbidden(f"Requires role {' or '.join(roles)}")


def verify_session_token(token: str) -> dict:
    """The verified claims of a Clerk session token (see `authenticate` for what is checked)."""
    if len(token) > _MAX_TOKEN_CHARS:
        raise Unauthorized("Invalid token")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid token") from None
    if header.get("alg") != "RS256":
        raise Unauthorized("Invalid token algorithm")
    cfg = settings()
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
    One per settings value (`_jwks`): keys of one Clerk instance never verify another's tokens."""

    def __init__(self, api_url: str, secret: str):
        self._scope = (api_url, secret)
        self._lock = threading.Lock()
        self._keys: dict[str, object] = {}
        self._fetched_at = float("-inf")

    def key(self, kid: str | None):
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= _JWKS_REFRESH_S:
                self._keys = self._fetch(*self._scope)
                self._fetched_at = time.monotonic()
            key = self._keys.get(kid) if kid else (next(iter(self._keys.values()), None)
                                                   if len(self._keys) == 1 else None)
        if key is None:
            raise Unauthorized("Invalid token")
        return key

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
