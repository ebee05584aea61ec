"""`dev-token` and `make dev`'s CLERK_JWT_KEY: a local token that the real auth accepts."""

import httpx
import jwt
import pytest

from devtools import dev, dev_keys
from lib import config
from ops import envfile
from tests.support.cli import run_cli


@pytest.fixture
def keys_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEV_KEYS_DIR", str(tmp_path / "dev-keys"))
    return tmp_path / "dev-keys"


def test_dev_token_is_accepted_with_the_dev_public_key(serve, keys_dir, monkeypatch):
    token = run_cli("dev-token", "--user", "user_dev", "--org", "org_dev", "--role", "owner").stdout.strip()
    key_line = run_cli("dev-token", "--user", "x", "--show-key").stdout.strip()
    assert "\n" not in key_line and key_line.startswith("-----BEGIN PUBLIC KEY-----\\n")
    monkeypatch.setenv("CLERK_JWT_KEY", key_line)  # exactly what .env carries
    config.reload()
    url = serve("api/admin/monitoring.py") + "/api/admin/monitoring"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    member = run_cli("dev-token", "--user", "user_dev", "--email", "dev@example.com").stdout.strip()
    assert httpx.get(url, headers={"Authorization": f"Bearer {member}"}).status_code == 403


def test_token_carries_clerk_shaped_claims(keys_dir):
    token = run_cli("dev-token", "--user", "u1", "--org", "org_9", "--role", "ADMIN",
                    "--email", "a@example.com", "--ttl", "120").stdout.strip()
    claims = jwt.decode(token, dev_keys.public_pem(), algorithms=["RS256"])
    assert (claims["sub"], claims["o"]["id"], claims["metadata"]["role"], claims["email"]) == \
        ("u1", "org_9", "ADMIN", "a@example.com")
    assert claims["exp"] - claims["iat"] == 120


def test_private_key_is_kept_private(keys_dir):
    dev_keys.key_pair()
    assert (keys_dir / "private.pem").stat().st_mode & 0o077 == 0


def test_make_dev_sets_clerk_jwt_key_to_the_dev_public_key(keys_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("CLERK_JWT_KEY", raising=False)
    monkeypatch.delenv("CLERK_SECRET_KEY", raising=False)
    env, _keep = dev.prepare()
    assert env["CLERK_JWT_KEY"] == dev_keys.public_pem()
    envfile.write_env_file(tmp_path / ".env", env)
    line = next(row for row in (tmp_path / ".env").read_text().splitlines() if row.startswith("CLERK_JWT_KEY="))
    assert line.endswith('-----END PUBLIC KEY-----\\n"')  # one line, \n escapes


def test_make_dev_keeps_a_configured_clerk_key(keys_dir, monkeypatch):
    monkeypatch.setenv("CLERK_SECRET_KEY", "sk_test_mine")
    env, _keep = dev.prepare()
    assert "CLERK_JWT_KEY" not in env


@pytest.mark.parametrize("args", [["dev-token"], ["dev-token", "--user", "u", "--role", "ROOT"],
                                  ["dev-token", "--user", "u", "--ttl", "0"]])
def test_bad_arguments_are_usage_errors(args, keys_dir):
    assert run_cli(*args).returncode == 2


def test_operator_token_sees_the_platform_and_an_owner_token_only_its_org(serve, keys_dir,
                                                                          monkeypatch):
    from ops.dev_token import DEV_OPERATOR_ORG

    monkeypatch.delenv("OPERATOR_ORG_IDS", raising=False)
    operator = run_cli("dev-token", "--user", "user_ops", "--operator").stdout.strip()
    claims = jwt.decode(operator, dev_keys.public_pem(), algorithms=["RS256"])
    assert (claims["o"]["id"], claims["metadata"]["role"]) == (DEV_OPERATOR_ORG, "OWNER")
    owner = run_cli("dev-token", "--user", "user_c", "--org", "org_customer", "--role",
                    "OWNER").stdout.strip()
    key_line = run_cli("dev-token", "--user", "x", "--show-key").stdout.strip()
    # What `make dev` configures the local stack with.
    monkeypatch.setenv("CLERK_JWT_KEY", key_line)
    monkeypatch.setenv("OPERATOR_ORG_IDS", DEV_OPERATOR_ORG)
    config.reload()
    url = serve("api/admin/monitoring.py") + "/api/admin/monitoring"
    scopes = [httpx.get(url, headers={"Authorization": f"Bearer {token}"}).json()["scope"]
              for token in (operator, owner)]
    assert scopes == ["platform", "organization"]


def test_operator_token_follows_operator_org_ids(keys_dir):
    token = run_cli("dev-token", "--user", "u", "--operator",
                    env={"OPERATOR_ORG_IDS": " org_first , org_second"}).stdout.strip()
    assert jwt.decode(token, dev_keys.public_pem(), algorithms=["RS256"])["o"]["id"] == "org_first"
    assert run_cli("dev-token", "--user", "u", "--operator", "--org", "o").returncode == 2
