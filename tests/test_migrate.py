"""Migrations: idempotent, serialised between concurrent runners, checked against edits."""

import threading
import uuid

import psycopg
import pytest

from lib import migrate
from tests.conftest import _with_dbname


@pytest.fixture
def empty_database(postgres_server_url):
    name = f"ascendos_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_dbname(postgres_server_url, name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _versions() -> list[str]:
    return [m.version for m in migrate._files()]


def test_apply_twice_applies_each_file_once(empty_database):
    assert migrate.apply(empty_database) == _versions()
    assert migrate.apply(empty_database) == []
    assert all(m.applied_at is not None for m in migrate.status(empty_database))


def test_status_lists_pending_before_apply(empty_database):
    assert [m.applied_at for m in migrate.status(empty_database)] == [None] * len(_versions())


def test_concurrent_runners_apply_each_file_exactly_once(empty_database):
    results, errors = [], []

    def runner():
        try:
            results.append(migrate.apply(empty_database))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results, key=len) == [[]] * 4 + [_versions()]
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(_versions())


def test_an_edited_applied_migration_is_refused(empty_database):
    migrate.apply(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = %s",
                     (_versions()[0],))
    with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
        migrate.apply(empty_database)
