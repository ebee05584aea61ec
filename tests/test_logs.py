"""Issue 10 §2: nothing the function writes to stdout or stderr carries a secret, served the
way production serves it (vercel_runtime's IPC-mode `class Handler(BaseHandler, handler)`)."""

import json
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from devtools.serve import runtime_handler, serve_runtime_layout
from lib import config
from lib.observability import log
from tests.support.crons import SECRET, fire


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_runtime_layout_puts_the_runtime_methods_first():
    """What makes the issue: in production, BaseHandler.log_message beats the route's own."""

    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    served = runtime_handler(Quiet)
    assert served.__mro__[1].__name__ == "BaseHandler" and served.__mro__[2] is Quiet
    assert served.log_message is not Quiet.log_message


def test_the_runtime_layout_prints_the_access_line_of_a_plain_handler(capfd):
    """The test server is faithful: a handler that only silences log_message (what Endpoint did
    before) still gets the stdlib access line, full URL included, on stdout."""

    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.send_response(204)
            self.end_headers()

    with serve_runtime_layout(Quiet) as url:
        assert httpx.post(url + "/api/cron/purge?secret=leaky-value-123456").status_code == 204
    assert "POST /api/cron/purge?secret=leaky-value-123456" in capfd.readouterr().out


def test_cron_purge_with_the_secret_in_the_query_writes_no_secret(serve, cron_secret, capfd):
    url = serve("api/cron/purge.py")
    capfd.readouterr()
    response = httpx.post(f"{url}/api/cron/purge?secret={SECRET}&dry_run=1", timeout=30)
    assert response.status_code == 200, response.text
    wrong = "not-the-cron-secret-8e51c0"
    assert httpx.post(f"{url}/api/cron/purge?secret={wrong}", timeout=30).status_code == 401
    assert fire(url, "/api/cron/purge", "POST").status_code == 200  # the header form
    out, err = capfd.readouterr()
    for secret in (SECRET, wrong):
        assert secret not in out and secret not in err
    assert "?secret" not in out + err
    requests = [line for line in _lines(out) if line["event"] == "request"]
    assert [line["status"] for line in requests] == [200, 401, 200]
    assert {line["route"] for line in requests} == {"/api/cron/purge"}


@pytest.mark.pure
def test_every_log_line_redacts_secrets_query_values_and_emails(monkeypatch, capfd):
    monkeypatch.setenv("CRON_SECRET", "configured-cron-secret-4c1d")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:db-pass-77e1a0@db.example.test/app")
    config.reload()
    log("probe", path="/api/cron/purge?dry_run=1&secret=anything-at-all",
        detail="token configured-cron-secret-4c1d via db-pass-77e1a0 for jane.doe@example.com")
    out = capfd.readouterr().out
    line = _lines(out)[0]
    assert line["path"] == "/api/cron/purge?dry_run=1&secret=[Filtered]"
    assert line["detail"] == "token [Filtered] via [Filtered] for [email]"
    for secret in ("anything-at-all", "configured-cron-secret-4c1d", "db-pass-77e1a0", "jane.doe"):
        assert secret not in out


@pytest.mark.pure
def test_database_passwords_are_redacted_in_every_spelling(monkeypatch, capfd):
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:p%40ss-w0rd-91@db.example.test/app")
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "postgresql://app:unpooled-pw-3d7b@db.example.test/app")
    config.reload()
    log("probe", a="p%40ss-w0rd-91", b="p@ss-w0rd-91", c="unpooled-pw-3d7b")
    line = _lines(capfd.readouterr().out)[0]
    assert (line["a"], line["b"], line["c"]) == ("[Filtered]",) * 3
