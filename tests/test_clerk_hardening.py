"""Clerk hardening at the routes (issue 10 §5), over real HTTP: a pending session is a 403,
production without CLERK_AUTHORIZED_PARTIES fails closed, and a failing Clerk JWKS endpoint
is fetched with backoff, not once per request."""

import httpx
import pytest

from tests.support.clerk import SECRET_KEY, FakeClerk
from tests.support.tokens import AZP, OTHER_PRIVATE_PEM, mint_token

MONITORING = "/api/admin/monitoring"


def test_a_pending_session_is_403_session_pending_and_reaches_nothing(stack, sql):
    response = stack.post(token=mint_token("user_p", org_id="org_p", sts="pending"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "session_pending"
    assert stack.openai.calls == 0 and sql("SELECT count(*) FROM organizations") == [(0,)]
    assert stack.post(token=mint_token("user_p", org_id="org_p", sts="active")).status_code == 200


def test_production_without_authorized_parties_fails_closed_on_every_authenticated_route(
        stack, serve):
    stack.configure(VERCEL_ENV="production", CLERK_AUTHORIZED_PARTIES="")
    monitoring = serve("api/admin/monitoring.py") + MONITORING
    owner = mint_token("user_o", org_id="org_o", role="OWNER")
    for response in (stack.post(), stack.post(token=""),
                     httpx.get(monitoring, headers={"Authorization": f"Bearer {owner}"})):
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "config_error"
    assert stack.openai.calls == 0
    stack.configure(CLERK_AUTHORIZED_PARTIES=AZP)
    assert stack.post().status_code == 200


@pytest.fixture
def clerk(stack):
    fake = FakeClerk()
    stack.configure(CLERK_JWT_KEY="", CLERK_SECRET_KEY=SECRET_KEY, CLERK_API_URL=fake.url)
    yield fake
    fake.close()


def test_clerk_answering_500_is_fetched_with_backoff_not_per_request(stack, clerk):
    clerk.status = 500
    garbage = [mint_token(f"u{i}", key=OTHER_PRIVATE_PEM, headers={"kid": f"ins_forged_{i}"})
               for i in range(30)]
    statuses = [stack.post(token=token).status_code for token in garbage]
    assert set(statuses) == {503}
    assert clerk.fetches <= 2


def test_unknown_kid_is_401_while_a_key_set_is_cached(stack, clerk):
    assert stack.post().status_code == 200  # the keys are fetched and cached
    clerk.status = 500
    for i in range(10):
        response = stack.post(token=mint_token("u", key=OTHER_PRIVATE_PEM,
                                               headers={"kid": f"ins_unknown_{i}"}))
        assert response.status_code == 401, response.text
    assert clerk.fetches == 1
    assert stack.post().status_code == 200

