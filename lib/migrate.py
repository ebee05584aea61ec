"""Versioned SQL migrations (lib/migrations/NNNN_name.sql), applied in order.

`apply()` is idempotent and serialised by a Postgres advisory lock, so two runners at once
apply each file exactly once. Each file runs in its own transaction with its bookkeeping row:
a failing file leaves nothing behind and stops the run.

The lock is session-level, which Neon's pooled endpoint (PgBouncer in transaction mode) doesn't
support: `url()` is DATABASE_URL_UNPOOLED (Neon's direct connection string) when it is set,
else DATABASE_URL.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from lib.config import Settings, settings
from lib.errors import ConfigError

_DIR = Path(__file__).with_name("migrations")
_LOCK_KEY = 0x61736365  # "asce": one advisory lock id for every migration runner

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path
    applied_at: datetime | None = None

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class MigrationError(Exception):
    pass


def url(cfg: Settings | None = None) -> str:
    """Where migrations run: DATABASE_URL_UNPOOLED when set, else DATABASE_URL."""
    cfg = cfg or settings()
    found = cfg.database_url_unpooled or cfg.database_url
    if not found:
        raise ConfigError("DATABASE_URL is not set")
    return found


def _files() -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted(_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def _applied(conn: psycopg.Connection) -> dict[str, dict]:
    conn.execute(_BOOKKEEPING)
    rows = conn.execute("SELECT version, checksum, applied_at FROM schema_migrations").fetchall()
    return {row["version"]: row for row in rows}


def status(url: str) -> list[Migration]:
    """Every known migration with its applied time (None when pending)."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=5) as conn:
        applied = _applied(conn)
    return [Migration(m.version, m.path, (applied.get(m.version) or {}).get("applied_at"))
            for m in _files()]


def apply(url: str) -> list[str]:
    """Apply every pending migration; returns the versions applied by this call.

    Raises MigrationError when an applied file was edited afterwards (checksum mismatch).
    """
    done = []
    with psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            applied = _applied(conn)
            for migration in _files():
                known = applied.get(migration.version)
                if known:
                    if known["checksum"] != migration.checksum:
                        raise MigrationError(f"{migration.version} changed after it was applied")
                    continue
                with conn.transaction():
                    conn.execute(migration.path.read_text())
                    conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                                 (migration.version, migration.checksum))
                done.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done
