"""Unsubscribe tokens (lib.jobs.unsubscribe): only the key holder can make one, for one user."""

import base64

import pytest

from lib import config, errors
from lib.jobs.unsubscribe import (InvalidUnsubscribeToken, opt_out_with_token, unsubscribe_token,
                                  verify_unsubscribe_token)
from tests.support import crons as rows


def _opted_out(sql, user_id) -> bool:
    return sql.execute("SELECT reminders_opt_out FROM users WHERE id = %s", (user_id,)).fetchone()["reminders_opt_out"]


def test_a_valid_token_opts_its_user_out_and_only_that_user(cron_secret, sql):
    organization = rows.org(sql, "TEAM")
    alice, bob = rows.user(sql, organization), rows.user(sql, organization)
    assert opt_out_with_token(unsubscribe_token(alice)) == alice
    assert _opted_out(sql, alice) and not _opted_out(sql, bob)
    assert opt_out_with_token(unsubscribe_token(alice)) == alice  # idempotent


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_token_cannot_be_forged_for_another_user(cron_secret, sql):
    organization = rows.org(sql, "TEAM")
    attacker, victim = rows.user(sql, organization), rows.user(sql, organization)
    _, signature = unsubscribe_token(attacker).split(".")
    forgeries = [
        f"{_b64(victim.encode())}.{signature}",                      # someone else's signature
        f"{_b64(victim.encode())}.",                                 # no signature
        f"{_b64(victim.encode())}.{_b64(b'x' * 32)}",                # a made-up one
        _b64(victim.encode()),                                       # no separator
        unsubscribe_token(victim)[:-2],                              # truncated
        unsubscribe_token(victim) + "A",                             # extended
        f"{_b64(victim.encode())}.{signature}.{signature}",          # extra part
        "%%%.***", "", "." * 600,
    ]
    for token in forgeries:
        with pytest.raises(InvalidUnsubscribeToken):
            opt_out_with_token(token)
    assert not _opted_out(sql, victim)


def test_a_token_signed_with_another_key_is_rejected(cron_secret, sql, monkeypatch):
    user_id = rows.user(sql, rows.org(sql, "TEAM"))
    old = unsubscribe_token(user_id)
    monkeypatch.setenv("UNSUBSCRIBE_SECRET", "a-dedicated-unsubscribe-key")
    config.reload()
    with pytest.raises(InvalidUnsubscribeToken):
        verify_unsubscribe_token(old)
    fresh = unsubscribe_token(user_id)
    monkeypatch.setenv("CRON_SECRET", "a-rotated-cron-secret-value")
    config.reload()
    assert verify_unsubscribe_token(fresh) == user_id  # a dedicated key survives CRON_SECRET rotation


def test_a_valid_token_for_a_deleted_user_is_not_found(cron_secret):
    with pytest.raises(errors.NotFound):
        opt_out_with_token(unsubscribe_token("user_gone"))


@pytest.mark.pure
def test_tokens_need_a_key(monkeypatch):
    monkeypatch.delenv("CRON_SECRET", raising=False)
    monkeypatch.delenv("UNSUBSCRIBE_SECRET", raising=False)
    config.reload()
    with pytest.raises(errors.ConfigError):
        unsubscribe_token("user_1")
