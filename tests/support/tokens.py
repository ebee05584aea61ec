"""Real RS256 Clerk-shaped session tokens signed with a test key pair made at import.

    from tests.support.tokens import PUBLIC_PEM, mint_token
    monkeypatch.setenv("CLERK_JWT_KEY", PUBLIC_PEM)
    token = mint_token("user_1", org_id="org_1", role="OWNER")

`OTHER_PRIVATE_PEM` is a second key (a forger's), `JWKS` the public key as Clerk's
/v1/jwks would serve it (kid `KID`).
"""

import base64
import json
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KID = "ins_test_key_1"
AZP = "http://localhost:3000"


def _key_pair() -> tuple[rsa.RSAPrivateKey, str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, private_pem, public_pem


PRIVATE_KEY, PRIVATE_PEM, PUBLIC_PEM = _key_pair()
_OTHER, OTHER_PRIVATE_PEM, OTHER_PUBLIC_PEM = _key_pair()


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_numbers = PRIVATE_KEY.public_key().public_numbers()
JWKS = {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID,
                  "n": _b64(_numbers.n), "e": _b64(_numbers.e)}]}


def claims(sub: str, org_id: str | None = None, role: str | None = None,
           email: str | None = None, *, version: int = 2, **overrides) -> dict:
    """The claims of a Clerk session token: v2 puts the org in `o.id`, v1 in `org_id`;
    the role is Clerk's RBAC custom claim `metadata.role`."""
    now = int(time.time())
    payload = {"sub": sub, "sid": f"sess_{sub}", "iss": "https://clerk.test.local", "azp": AZP,
               "iat": now, "nbf": now - 1, "exp": now + 60}
    if version == 2:
        payload["v"] = 2
    if org_id is not None and version == 2:
        payload["o"] = {"id": org_id, "rol": "admin", "slg": org_id}
    elif org_id is not None:
        payload["org_id"], payload["org_role"] = org_id, "org:admin"
    if role is not None:
        payload["metadata"] = {"role": role}
    if email is not None:
        payload["email"] = email
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def mint_token(sub: str, org_id: str | None = None, role: str | None = None,
               email: str | None = None, *, key: str = PRIVATE_PEM, algorithm: str = "RS256",
               headers: dict | None = None, version: int = 2, **overrides) -> str:
    """A signed session token. Claims in `overrides` replace (or, set to None, drop) defaults."""
    return jwt.encode(claims(sub, org_id, role, email, version=version, **overrides), key,
                      algorithm=algorithm,
                      headers={"kid": KID, **(headers or {})})


def unsigned_token(payload: dict) -> str:
    """An `alg: none` token (what a forger sends hoping the verifier skips the signature)."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."
