"""lib.generation.tenancy: provisioning from a Clerk identity, idempotent and race-safe."""

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from lib.generation import tenancy
from lib.auth import Identity


def _counts(database_url):
    with psycopg.connect(database_url) as conn:
        return (conn.execute("SELECT count(*) FROM organizations").fetchone()[0],
                conn.execute("SELECT count(*) FROM users").fetchone()[0])


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_first_calls_make_one_user_and_one_org(database_url, round_):
    identity = Identity(f"user_race_{round_}", f"org_race_{round_}", "race@example.com", "MEMBER")
    barrier = threading.Barrier(12)

    def first_call(_):
        barrier.wait()
        return tenancy.provision(identity)

    with ThreadPoolExecutor(max_workers=12) as pool:
        tenants = list(pool.map(first_call, range(12)))
    assert len({t.organization_id for t in tenants}) == 1
    assert _counts(database_url) == (1, 1)


def test_concurrent_first_calls_of_two_users_share_one_new_org(database_url):
    barrier = threading.Barrier(10)

    def first_call(i):
        barrier.wait()
        return tenancy.provision(Identity(f"user_{i % 2}", "org_shared", None, "MEMBER"))

    with ThreadPoolExecutor(max_workers=10) as pool:
        tenants = list(pool.map(first_call, range(10)))
    assert len({t.organization_id for t in tenants}) == 1
    assert _counts(database_url) == (1, 2)


def test_provision_is_idempotent_and_writes_nothing_when_nothing_changed(database_url):
    identity = Identity("user_1", None, "a@example.com", "OWNER")
    first = tenancy.provision(identity)
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT xmin::text FROM users").fetchone()[0]
    assert tenancy.provision(identity) == first
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT xmin::text FROM users").fetchone()[0] == before
        assert conn.execute("SELECT is_personal, external_id FROM organizations").fetchone() == \
            (True, "user_1")


def test_missing_email_keeps_the_known_one(database_url):
    tenancy.provision(Identity("user_1", "org_1", "known@example.com", "MEMBER"))
    tenancy.provision(Identity("user_1", "org_1", None, "ADMIN"))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT email, role FROM users").fetchone() == ("known@example.com", "ADMIN")


def test_user_switching_clerk_org_follows_the_active_org(database_url):
    tenancy.provision(Identity("user_1", "org_a", None, "MEMBER"))
    tenant = tenancy.provision(Identity("user_1", "org_b", None, "MEMBER"))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT organization_id FROM users").fetchone()[0] == tenant.organization_id
