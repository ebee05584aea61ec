"""lib.auth: Clerk session tokens verified networkless (CLERK_JWT_KEY) or through JWKS."""

import time

import pytest

from lib import auth, config, errors
from tests.support.clerk import SECRET_KEY, FakeClerk
from tests.support.tokens import (AZP, OTHER_PRIVATE_PEM, OTHER_PUBLIC_PEM, PUBLIC_PEM, claims,
                                  mint_token, unsigned_token)

pytestmark = pytest.mark.pure  # tokens and a fake Clerk, no Postgres, no Redis


@pytest.fixture
def pem_key(monkeypatch):
    monkeypatch.setenv("CLERK_JWT_KEY", PUBLIC_PEM)
    config.reload()


@pytest.fixture
def clerk(monkeypatch):
    fake = FakeClerk()
    monkeypatch.setenv("CLERK_JWT_KEY", "")
    monkeypatch.setenv("CLERK_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("CLERK_API_URL", fake.url)
    config.reload()
    yield fake
    fake.close()


def test_v2_token_gives_user_org_email_and_role(pem_key):
    token = mint_token("user_1", org_id="org_9", role="admin", email="a@example.com")
    identity = auth.authenticate(token)
    assert identity == auth.Identity("user_1", "org_9", "a@example.com", "ADMIN", "sess_user_1")
    assert identity.tenant_external_id == "org_9" and not identity.is_personal


def test_v1_token_reads_org_id_claim(pem_key):
    token = mint_token("user_1", org_id="org_v1", version=1)
    assert auth.authenticate(token).org_external_id == "org_v1"


def test_no_org_means_personal_tenant_and_member_role(pem_key):
    identity = auth.authenticate(mint_token("user_2"))
    assert identity.org_external_id is None and identity.role == "MEMBER"
    assert identity.tenant_external_id == "user_2" and identity.is_personal


def test_unknown_role_falls_back_to_member(pem_key):
    assert auth.authenticate(mint_token("u", role="superuser")).role == "MEMBER"


def test_pem_with_escaped_newlines_works(monkeypatch):
    monkeypatch.setenv("CLERK_JWT_KEY", PUBLIC_PEM.replace("\n", "\\n"))
    config.reload()
    assert auth.authenticate(mint_token("u")).user_id == "u"


FORGERIES = {
    "alg_none": lambda: unsigned_token(claims("user_1")),
    "wrong_key": lambda: mint_token("user_1", key=OTHER_PRIVATE_PEM),
    "expired": lambda: mint_token("user_1", exp=int(time.time()) - 60),
    "not_yet_valid": lambda: mint_token("user_1", nbf=int(time.time()) + 120),
    "no_exp": lambda: mint_token("user_1", exp=None),
    "garbage": lambda: "not.a.jwt",
    "huge": lambda: "a" * 20000,
    "sub_not_a_string": lambda: mint_token(12345),
}


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_or_invalid_tokens_are_unauthorized(pem_key, name):
    with pytest.raises(errors.Unauthorized):
        auth.authenticate(FORGERIES[name]())


def test_hs256_with_public_key_is_refused_even_though_pyjwt_could_be_asked(pem_key):
    # Build it by hand so no library guard stops the forger: the header says HS256.
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}." \
                    f"{b64(json.dumps(claims('user_1')).encode())}"
    signature = hmac.new(PUBLIC_PEM.encode(), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(errors.Unauthorized):
        auth.verify_session_token(f"{signing_input}.{b64(signature)}")


def test_missing_bearer_is_unauthorized(pem_key):
    with pytest.raises(errors.Unauthorized):
        auth.authenticate(None)


def test_small_clock_skew_is_tolerated(pem_key):
    token = mint_token("u", exp=int(time.time()) - 2, nbf=int(time.time()) + 2)
    assert auth.authenticate(token).user_id == "u"


def test_authorized_parties_accept_listed_azp_and_refuse_others(pem_key, monkeypatch):
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", f"https://app.example.com, {AZP}")
    config.reload()
    assert auth.authenticate(mint_token("u")).user_id == "u"
    for azp in ("https://evil.example.com", None):
        with pytest.raises(errors.Unauthorized):
            auth.authenticate(mint_token("u", azp=azp))


def test_jwks_is_fetched_once_per_process_and_reused(clerk):
    config.reload()  # a fresh JWKS cache
    for _ in range(3):
        assert auth.authenticate(mint_token("u")).user_id == "u"
    assert clerk.fetches == 1


def test_jwks_refuses_a_token_signed_by_another_key(clerk):
    config.reload()  # a fresh JWKS cache
    with pytest.raises(errors.Unauthorized):
        auth.authenticate(mint_token("u", key=OTHER_PRIVATE_PEM))


def test_unknown_kid_refetches_at_most_once_per_minute(clerk):
    config.reload()  # a fresh JWKS cache
    auth.authenticate(mint_token("u"))
    for _ in range(5):
        with pytest.raises(errors.Unauthorized):
            auth.authenticate(mint_token("u", headers={"kid": "ins_unknown"}))
    assert clerk.fetches == 1


def test_unreachable_jwks_is_auth_unavailable(clerk):
    config.reload()  # a fresh JWKS cache
    clerk.status = 500
    with pytest.raises(errors.AuthUnavailable):
        auth.authenticate(mint_token("u"))


def test_no_key_configured_is_a_config_error(monkeypatch):
    monkeypatch.setenv("CLERK_JWT_KEY", "")
    monkeypatch.setenv("CLERK_SECRET_KEY", "")
    config.reload()
    with pytest.raises(errors.ConfigError):
        auth.authenticate(mint_token("u"))


def test_require_role(pem_key):
    owner = auth.authenticate(mint_token("u", role="OWNER"))
    auth.require_role(owner, "OWNER")
    with pytest.raises(errors.Forbidden):
        auth.require_role(auth.authenticate(mint_token("u")), "OWNER", "ADMIN")


# --- issue 10 §5: Clerk hardening ---------------------------------------------------------

def test_a_pending_session_is_403_session_pending(pem_key):
    with pytest.raises(auth.SessionPending) as caught:
        auth.authenticate(mint_token("u", sts="pending"))
    assert caught.value.status == 403 and caught.value.code == "session_pending"
    assert auth.authenticate(mint_token("u", sts="active")).user_id == "u"


def test_production_without_authorized_parties_fails_closed(pem_key, monkeypatch):
    monkeypatch.setenv("VERCEL_ENV", "production")
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "")
    config.reload()
    for token in (mint_token("u"), None):
        with pytest.raises(errors.ConfigError) as caught:
            auth.authenticate(token)
        assert caught.value.status == 500 and "CLERK_AUTHORIZED_PARTIES" in caught.value.message
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", AZP)
    config.reload()
    assert auth.authenticate(mint_token("u")).user_id == "u"


def test_jwks_failure_is_remembered_not_refetched_per_request(clerk):
    clerk.status = 500
    config.reload()
    for _ in range(30):
        with pytest.raises(errors.AuthUnavailable):
            auth.authenticate(mint_token("u", key=OTHER_PRIVATE_PEM, headers={"kid": "ins_x"}))
    assert clerk.fetches <= 2


def test_jwks_backoff_ends_and_keys_are_fetched_again(clerk):
    jwks = auth._Jwks(clerk.url, SECRET_KEY)
    clerk.status = 500
    with pytest.raises(errors.AuthUnavailable):
        jwks.key("ins_test_key_1")
    clerk.status = 200
    deadline = time.monotonic() + auth._JWKS_BACKOFF_S + 5
    while time.monotonic() < deadline:
        try:
            assert jwks.key("ins_test_key_1") is not None
            break
        except errors.AuthUnavailable:
            time.sleep(0.2)
    else:
        pytest.fail("the keys were never fetched again after the backoff")
    assert clerk.fetches == 2


def test_unknown_kid_is_401_while_keys_are_cached_even_when_the_refresh_fails(clerk):
    jwks = auth._Jwks(clerk.url, SECRET_KEY, refresh_s=0)  # every unknown kid may refresh
    assert jwks.key("ins_test_key_1") is not None
    clerk.status = 500
    for _ in range(5):
        with pytest.raises(errors.Unauthorized):
            jwks.key("ins_rotated_away")
    assert clerk.fetches <= 3  # the first refresh failed: backing off since
    assert jwks.key("ins_test_key_1") is not None


def test_valid_tokens_are_not_stuck_behind_a_slow_fetch(clerk):
    import threading

    jwks = auth._Jwks(clerk.url, SECRET_KEY, refresh_s=0)
    assert jwks.key("ins_test_key_1") is not None
    clerk.hold.clear()  # Clerk now hangs until released
    refreshing = threading.Thread(target=lambda: pytest.raises(errors.Unauthorized,
                                                               jwks.key, "ins_new"))
    refreshing.start()
    while clerk.started < 2:
        time.sleep(0.01)
    served = []
    reader = threading.Thread(target=lambda: served.append(jwks.key("ins_test_key_1")))
    reader.start()
    reader.join(timeout=10)
    assert served and served[0] is not None  # answered while the fetch still hangs
    assert refreshing.is_alive()
    clerk.hold.set()
    refreshing.join(timeout=10)
    assert clerk.fetches == 2


# --- tokens already verified (auth._Verified) ---------------------------------------------

def test_a_token_seen_before_is_answered_from_memory_and_still_expires(pem_key):
    # Valid only thanks to the 5 s leeway, for one more second or so.
    token = mint_token("u_seen", exp=int(time.time()) - auth.LEEWAY_S + 2)
    assert auth.authenticate(token).user_id == "u_seen"
    assert auth._verified.get(token, config.settings())["sub"] == "u_seen"
    assert auth.authenticate(token).user_id == "u_seen"  # from memory
    time.sleep(2.1)
    assert auth._verified.get(token, config.settings()) is None
    with pytest.raises(errors.Unauthorized, match="expired"):
        auth.authenticate(token)


def test_a_token_seen_before_is_checked_again_under_a_new_key_or_allowlist(pem_key, monkeypatch):
    token = mint_token("u_seen")
    assert auth.authenticate(token).user_id == "u_seen"
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "https://app.example.com")
    config.reload()
    with pytest.raises(errors.Unauthorized, match="another origin"):
        auth.authenticate(token)
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "")
    monkeypatch.setenv("CLERK_JWT_KEY", OTHER_PUBLIC_PEM)
    config.reload()
    with pytest.raises(errors.Unauthorized, match="Invalid token"):
        auth.authenticate(token)


def test_a_refused_token_is_not_remembered_and_memory_is_bounded(pem_key):
    forged = mint_token("u_forged", key=OTHER_PRIVATE_PEM)
    for _ in range(2):
        with pytest.raises(errors.Unauthorized):
            auth.authenticate(forged)
    assert auth._verified.get(forged, config.settings()) is None
    memory, cfg = auth._Verified(max_entries=3), config.settings()
    tokens = [mint_token(f"u_{i}") for i in range(5)]
    for token in tokens:
        memory.put(token, cfg, auth.verify_session_token(token))
    assert [t for t in tokens if memory.get(t, cfg) is not None] == tokens[2:]  # oldest first
