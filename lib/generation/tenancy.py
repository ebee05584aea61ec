"""Users and organizations, provisioned from a verified Clerk identity on first contact.

The organization is the token's active Clerk org, or a personal organization keyed by the
user id when there is none. New organizations start on TRIAL with `trial_ends_at` = now +
TRIAL_DAYS. The user row mirrors the token's email and `metadata.role` and points at the
organization of the current call (a user who switches Clerk orgs follows along).

Provisioning is a set of CTEs that other statements build on, so that first contact costs
no extra round trip (lib.generation.quota folds it and the quota reservation into one
statement). The one seam is `provisioned()` to build such a statement and `run_provisioned()`
to run it; see `provisioned` for the contract. It writes nothing on a warm call: the org
insert is ON CONFLICT DO NOTHING and the user update only fires when something changed.
Race: two first calls at once insert one org and one user (unique keys); the loser's
statement may not see the winner's org row in its snapshot and then yields no `org` row, so
`run_provisioned` runs it again, which does see it.
"""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from lib import db
from lib.auth import Identity
from lib.config import settings

_PROVISION_SQL = """
new_org AS (
    INSERT INTO organizations (external_id, is_personal, plan, trial_ends_at)
    VALUES (%(org_external_id)s, %(is_personal)s, 'TRIAL',
            now() + make_interval(days => %(trial_days)s))
    ON CONFLICT (external_id) DO NOTHING
    RETURNING id, plan, trial_ends_at, subscription_status, current_period_end
),
org AS (
    SELECT * FROM new_org
    UNION ALL
    SELECT id, plan, trial_ends_at, subscription_status, current_period_end
    FROM organizations WHERE external_id = %(org_external_id)s
),
usr AS (
    INSERT INTO users AS u (id, organization_id, email, role)
    SELECT %(user_id)s, org.id, %(email)s, %(role)s FROM org
    ON CONFLICT (id) DO UPDATE
        SET organization_id = EXCLUDED.organization_id,
            email = COALESCE(EXCLUDED.email, u.email),
            role = EXCLUDED.role,
            updated_at = now()
        WHERE (u.organization_id, u.email, u.role) IS DISTINCT FROM
              (EXCLUDED.organization_id, COALESCE(EXCLUDED.email, u.email), EXCLUDED.role)
    RETURNING id
)"""


@dataclass(frozen=True)
class Tenant:
    organization_id: UUID
    plan: str
    trial_ends_at: datetime | None
    subscription_status: str | None
    current_period_end: datetime | None


def provisioned(select: str, ctes: str = "") -> str:
    """A statement that provisions the caller first: `WITH <provisioning>, <ctes> <select>`.

    The contract, for `ctes` and `select`:
    - they may read the CTE `org` (id, plan, trial_ends_at, subscription_status,
      current_period_end): the caller's organization, one row, or none when a concurrent
      first call won the race; and `usr` (the user row's id when it was written);
    - they must not use the parameter names of `_provision_params` for anything else;
    - `select` must return its first row with an `organization_id` column that is NULL
      when `org` is empty (e.g. `FROM (SELECT 1) AS one LEFT JOIN org ON true`).
    Run the statement with `run_provisioned`.
    """
    return f"WITH {_PROVISION_SQL}{',' + ctes if ctes else ''}\n{select}"


def _provision_params(identity: Identity) -> dict:
    return {"org_external_id": identity.tenant_external_id, "is_personal": identity.is_personal,
            "trial_days": settings().trial_days, "user_id": identity.user_id,
            "email": identity.email, "role": identity.role}


def run_provisioned(conn, sql: str, identity: Identity, params: dict | None = None):
    """Execute a statement built by `provisioned` for `identity` (plus the statement's own
    `params`) and return its first row, re-running it once when a concurrent first call won
    the provisioning race (no `org` row seen)."""
    params = {**(params or {}), **_provision_params(identity)}
    for _ in range(2):
        row = conn.execute(sql, params).fetchone()
        if row is not None and row["organization_id"] is not None:
            return row
    raise RuntimeError("organization vanished while provisioning")  # deleted mid-call


_PROVISION = provisioned("""
SELECT org.id AS organization_id, org.plan, org.trial_ends_at, org.subscription_status,
       org.current_period_end
FROM (SELECT 1) AS one LEFT JOIN org ON true""")


def provision(identity: Identity) -> Tenant:
    """The caller's organization, creating it and the user on first contact. Idempotent and
    race-safe; one statement (two in a first-call race). Raises DatabaseUnavailable."""
    row = db.run(lambda conn: run_provisioned(conn, _PROVISION, identity))
    return Tenant(**row)
