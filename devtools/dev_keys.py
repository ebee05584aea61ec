"""The local dev signing key pair, so every authenticated route can be tried without a Clerk
account: `make dev` sets CLERK_JWT_KEY to the public half, `python -m ops dev-token` signs
Clerk-shaped session tokens with the private half. Kept under `.data/dev-keys/` (git-ignored);
never used outside local development.
"""

import os
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.services import DATA

DEFAULT_DIR = DATA / "dev-keys"


def directory() -> Path:
    """Where the pair lives: DEV_KEYS_DIR (tests use a temporary one), else .data/dev-keys."""
    return Path(os.environ.get("DEV_KEYS_DIR") or DEFAULT_DIR)
ISSUER = "https://clerk.dev.local"
KID = "ins_dev_local"


def key_pair() -> tuple[str, str]:
    """(private PEM, public PEM), created on first use (RSA 2048, private file mode 0600)."""
    folder = directory()
    private_path, public_path = folder / "private.pem", folder / "public.pem"
    if not private_path.exists() or not public_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        private_path.touch(mode=0o600)
        private_path.write_bytes(private)
        public_path.write_bytes(public)
    return private_path.read_text(), public_path.read_text()


def public_pem() -> str:
    return key_pair()[1]


def mint(user_id: str, org_id: str | None = None, role: str | None = None,
         email: str | None = None, *, ttl_s: int = 3600, azp: str = "http://localhost:3000") -> str:
    """A Clerk v2-shaped session token (org in `o.id`, role in `metadata.role`) signed RS256
    with the dev private key, valid for `ttl_s` seconds (longer than Clerk's 60 s, for curl)."""
    private, _ = key_pair()
    now = int(time.time())
    claims = {"sub": user_id, "sid": f"sess_dev_{user_id}", "iss": ISSUER, "azp": azp, "v": 2,
              "iat": now, "nbf": now - 5, "exp": now + ttl_s}
    if org_id:
        claims["o"] = {"id": org_id, "rol": "admin", "slg": org_id}
    if role:
        claims["metadata"] = {"role": role}
    if email:
        claims["email"] = email
    return jwt.encode(claims, private, algorithm="RS256", headers={"kid": KID})
