"""`dev-token`: a session token for local development, signed by the dev key pair that
`make dev` trusts (CLERK_JWT_KEY = its public half), so no Clerk account is needed.
`--operator` makes a platform operator's token: an OWNER of the first organization in
OPERATOR_ORG_IDS (from the environment, else `.env`; `make dev` sets it to DEV_OPERATOR_ORG),
who sees the platform-wide monitoring dashboard; any other OWNER sees their own organization."""

import argparse
import os
import sys

from ops.arguments import int_range
from ops.envfile import ENV_FILE, read_env_file

DEV_OPERATOR_ORG = "org_dev_operator"  # the operator organization `make dev` configures


def _role(value: str) -> str:
    from lib.auth import ROLES  # lib.auth loads jwt: only when --role is given

    if value.upper() not in ROLES:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(ROLES)})")
    return value.upper()


def register(commands) -> None:
    p = commands.add_parser(
        "dev-token", help="mint a local session token (trusted by `make dev`)",
        description=__doc__, epilog="example: curl -H \"Authorization: Bearer $(python -m ops "
        "dev-token --user user_1 --role OWNER)\" localhost:3000/api/admin/monitoring")
    p.add_argument("--user", required=True, help="the token's sub (a Clerk user id)")
    p.add_argument("--org", help="active organization id (o.id); omitted = personal org")
    p.add_argument("--role", type=_role, help="metadata.role: OWNER, ADMIN or MEMBER (default MEMBER)")
    p.add_argument("--operator", action="store_true",
                   help="a platform operator: OWNER of the first org in OPERATOR_ORG_IDS "
                   f"(default {DEV_OPERATOR_ORG}); excludes --org and --role")
    p.add_argument("--email")
    p.add_argument("--ttl", type=int_range(1, 7 * 86400), default=3600,
                   help="validity in seconds (default 3600, at most a week)")
    p.add_argument("--show-key", action="store_true",
                   help="print the public key (CLERK_JWT_KEY value, one line) instead")
    p.set_defaults(run=run)


def operator_org() -> str:
    """The organization a local operator token acts for: the first of OPERATOR_ORG_IDS (the
    environment's, else `.env`'s), else DEV_OPERATOR_ORG."""
    raw = os.environ.get("OPERATOR_ORG_IDS") or read_env_file(ENV_FILE).get("OPERATOR_ORG_IDS", "")
    ids = [org.strip() for org in raw.split(",") if org.strip()]
    return ids[0] if ids else DEV_OPERATOR_ORG


def run(args: argparse.Namespace) -> int:
    from devtools import dev_keys  # dev-only: keeps jwt and cryptography out of `import ops.cli`

    if args.show_key:
        print(dev_keys.public_pem().strip().replace("\n", "\\n"))
        return 0
    org, role = args.org, args.role
    if args.operator:
        if org or role:
            print("error: --operator sets the organization and role; drop --org/--role",
                  file=sys.stderr)
            return 2
        org, role = operator_org(), "OWNER"
    print(dev_keys.mint(args.user, org, role, args.email, ttl_s=args.ttl))
    return 0
