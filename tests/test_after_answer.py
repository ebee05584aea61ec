"""The 200 of POST /api/generate leaves before its generations row's accounting is committed
(lib.http's `Response.after`, issue 12 §5): where the runtime ends the invocation only once
the handler returned (its IPC mode, on Fluid compute), the caller doesn't wait for that
commit and the invocation still outlasts it; under the runtime's Lambda-style adapter
(vercel_runtime.vc_init's `vc_handler`), which may freeze the function as soon as it holds
the answer, the row is committed before the answer leaves.

To see the order, a trigger on the test database holds the row's `succeeded` update for a
few seconds (real Postgres; the project's code is not touched)."""

import os
import subprocess
import sys

import httpx
import pytest

from devtools.serve import runtime_handler, serve_in_process, wait_for_port
from devtools.services import ROOT, free_port
from tests.support.tokens import mint_token

HOLD_S = 3


@pytest.fixture
def slow_record(sql):
    sql.execute(f"""
        CREATE FUNCTION test_hold_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep({HOLD_S}); RETURN NEW; END $$""")
    sql.execute("""
        CREATE TRIGGER test_hold_record BEFORE UPDATE ON generations FOR EACH ROW
        WHEN (OLD.status = 'pending' AND NEW.status = 'succeeded')
        EXECUTE FUNCTION test_hold_record()""")
    try:
        yield
    finally:
        sql.execute("DROP TRIGGER IF EXISTS test_hold_record ON generations")
        sql.execute("DROP FUNCTION IF EXISTS test_hold_record()")


def _headers() -> dict[str, str]:
    return {"authorization": "Bearer " + mint_token("user_after", org_id="org_after")}


def _row(sql, generation_id: str) -> dict:
    return sql.execute("SELECT status, input_tokens, output_tokens FROM generations WHERE id = %s",
                       (generation_id,)).fetchone()


def test_the_answer_leaves_before_its_accounting_and_the_invocation_ends_after_it(
        stack, sql, slow_record):
    handler = runtime_handler("api/generate.py")  # the IPC-mode layout production serves
    with serve_in_process(handler) as url, httpx.Client(timeout=30) as client:
        response = client.post(url + "/api/generate", json={"prompt": "Say hi"},
                               headers=_headers())
        assert response.status_code == 200, response.text
        body = response.json()
        # The caller has its answer; the row is still being recorded, and the runtime has not
        # been told the invocation ended (it would be free to freeze the instance).
        assert _row(sql, body["id"])["status"] == "pending"
        assert [m for m in handler.ipc_messages if m["type"] == "end"] == []
        client.get(url + "/api/generate")  # the same connection: served after the first ended
    ends = [m for m in handler.ipc_messages if m["type"] == "end"]
    assert len(ends) == 2
    assert _row(sql, body["id"]) == {"status": "succeeded", "input_tokens": 12, "output_tokens": 8}
    assert sql.execute("SELECT used FROM generation_usage").fetchall() == [{"used": 1}]


@pytest.mark.slow  # a separate function process
def test_under_the_lambda_style_adapter_the_row_is_recorded_before_the_answer(
        stack, sql, slow_record):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "devtools.vc_serve", "api/generate.py",
                                "--port", str(port)], cwd=ROOT, env=dict(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process=process)
        response = httpx.post(f"http://127.0.0.1:{port}/api/generate", json={"prompt": "Say hi"},
                              headers=_headers(), timeout=60)
        assert response.status_code == 200, response.text
        assert _row(sql, response.json()["id"]) == \
            {"status": "succeeded", "input_tokens": 12, "output_tokens": 8}
    finally:
        process.kill()
        process.wait()
