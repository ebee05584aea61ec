"""`dev-token`: a session token for local development, signed by the dev key pair that
`make dev` trusts (CLERK_JWT_KEY = its public half), so no Clerk account is needed."""

import argparse

from ops.arguments import int_range


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
    p.add_argument("--email")
    p.add_argument("--ttl", type=int_range(1, 7 * 86400), default=3600,
                   help="validity in seconds (default 3600, at most a week)")
    p.add_argument("--show-key", action="store_true",
                   help="print the public key (CLERK_JWT_KEY value, one line) instead")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from devtools import dev_keys  # dev-only: keeps jwt and cryptography out of `import ops.cli`

    if args.show_key:
        print(dev_keys.public_pem().strip().replace("\n", "\\n"))
        return 0
    print(dev_keys.mint(args.user, args.org, args.role, args.email, ttl_s=args.ttl))
    return 0
