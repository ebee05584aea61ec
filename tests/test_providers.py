"""Issue 12 §1 and §4, issue 11 §2: current models, requests built from the model table,
misconfiguration falling back, the circuit breaker counting only provider-side outcomes,
`messages`, and the provider's request id. Through the real route, the real SDKs and local
servers that speak their wire formats."""

import ast
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from lib import config, monitoring
from lib.auth import Identity
from lib.generation import generation, llm
from lib.generation.llm import anthropic_messages, models, openai_chat

SHUTDOWN_MARGIN = timedelta(days=183)  # "shutting down within 6 months" fails the test


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


@pytest.fixture(autouse=True)
def _fresh_report_window():
    """Misconfigurations are reported once per instance per few minutes: each test is a new
    instance as far as that window goes."""
    llm._reported.clear()
    yield
    llm._reported.clear()


# --- §1 defaults: read the pinned SDKs' own model lists and deprecation data --------------

def _openai_models() -> tuple[set[str], dict[str, date | None]]:
    """(ChatModel ids, {id: announced shutdown date or None for "not supported"}) from the
    installed openai SDK's chat_model.py (the shutdown notes are its trailing docstring)."""
    import typing

    from openai.types.shared import chat_model

    listed = set(typing.get_args(chat_model.ChatModel))
    tree = ast.parse(Path(chat_model.__file__).read_text())
    notes = next(str(node.value.value) for node in tree.body if isinstance(node, ast.Expr)
                 and isinstance(node.value, ast.Constant) and "Deprecated" in str(node.value.value))
    shutdowns: dict[str, date | None] = {}
    for entry in re.split(r"\n- ", notes):
        ids, _, rest = entry.partition(":")
        found = re.search(r"shutdown\s+date:\s+(\d{4}-\d{2}-\d{2})", rest.replace("\n", " "))
        when = date.fromisoformat(found.group(1)) if found else None
        for model in re.findall(r'"([^"]+)"', ids):
            shutdowns[model] = when
    return listed, shutdowns


def _anthropic_models() -> tuple[set[str], dict[str, date]]:
    import typing

    from anthropic._data.deprecated_models import DEPRECATED_MODELS
    from anthropic.types import model

    listed = {value for arg in typing.get_args(model.Model) for value in typing.get_args(arg)}
    retiring = {}
    for name, when in DEPRECATED_MODELS.items():  # "June 30th, 2026"
        cleaned = re.sub(r"(\d+)(st|nd|rd|th)", r"\1", when)
        retiring[name] = datetime.strptime(cleaned, "%B %d, %Y").date()
    return listed, retiring


def test_the_sdk_data_is_readable():
    """Guards the parsers below: a format change in an SDK must not make them see nothing."""
    openai_listed, openai_shutdowns = _openai_models()
    anthropic_listed, anthropic_retiring = _anthropic_models()
    assert len(openai_listed) > 10 and len(anthropic_listed) > 3
    assert openai_shutdowns and set(openai_shutdowns) <= openai_listed
    assert set(anthropic_retiring) <= anthropic_listed | set(anthropic_retiring)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_default_models_are_current_and_not_retiring_within_6_months(provider):
    var = next(v for v in config.VARS if v.name == f"{provider.upper()}_MODEL")
    default = var.default
    listed, deprecated = _openai_models() if provider == "openai" else _anthropic_models()
    assert default in listed, f"{var.name} default {default!r} is not in the pinned SDK's list"
    if default in deprecated:
        when = deprecated[default]
        assert when is not None, f"{default!r}: the SDK says it is not a supported model id"
        assert when - date.today() > SHUTDOWN_MARGIN, \
            f"{var.name} default {default!r} shuts down on {when}: pick a current model"
    assert models.spec_for(provider, default).family is not None, "add the default to MODELS"


# --- §1 the model table and the requests built from it -----------------------------------

def test_requests_follow_the_model_table():
    chat = openai_chat.request("gpt-5.4-mini-2026-03-17", [{"role": "user", "content": "hi"}],
                               "sys", 100, 0.3)
    assert chat == {"model": "gpt-5.4-mini-2026-03-17", "max_completion_tokens": 100,
                    "messages": [{"role": "system", "content": "sys"},
                                 {"role": "user", "content": "hi"}]}  # temperature refused
    assert openai_chat.request("gpt-4o-mini", [{"role": "user", "content": "hi"}], None, 5,
                               0.3) == {"model": "gpt-4o-mini", "max_tokens": 5,
                                        "temperature": 0.3,
                                        "messages": [{"role": "user", "content": "hi"}]}
    unknown = openai_chat.request("gpt-9-nova", [{"role": "user", "content": "hi"}], None, 5, None)
    assert "max_completion_tokens" in unknown and "max_tokens" not in unknown
    assert "temperature" not in unknown
    assert openai_chat.request("gpt-9-nova", [{"role": "user", "content": "hi"}], None, 5,
                               0.7)["temperature"] == 0.7  # unknown: sent when the caller gave one
    message = anthropic_messages.request("claude-sonnet-4-6", [{"role": "user", "content": "hi"}],
                                         "sys", 9, 0.5)
    assert message == {"model": "claude-sonnet-4-6", "max_tokens": 9, "temperature": 0.5,
                       "system": "sys", "messages": [{"role": "user", "content": "hi"}]}
    # Haiku 5.5 refuses any temperature: the caller's value is dropped, not sent to be refused.
    assert "temperature" not in anthropic_messages.request(
        "claude-haiku-5-5", [{"role": "user", "content": "hi"}], None, 9, 0.5)
    assert "max_tokens" in anthropic_messages.request("claude-next-9", [], None, 9, None)


def test_the_model_table_rows_are_well_formed():
    for family, (provider, tokens_param, _) in models.MODELS.items():
        assert provider in ("openai", "anthropic") and tokens_param in (
            models.MAX_COMPLETION_TOKENS, models.MAX_TOKENS), family
        if provider == "anthropic":
            assert tokens_param == models.MAX_TOKENS, family


def test_gpt5_family_is_sent_max_completion_tokens_and_no_temperature(stack, sql):
    stack.configure(OPENAI_MODEL="gpt-5.4-mini")
    response = stack.post({"prompt": "hi", "max_tokens": 64, "temperature": 0.2})
    assert response.status_code == 200, response.text
    sent = stack.openai.requests[0]["json"]
    assert sent["max_completion_tokens"] == 64
    assert "max_tokens" not in sent and "temperature" not in sent


def test_unsupported_parameter_is_misconfigured_falls_back_and_leaves_the_breaker(
        stack, sql, redis_direct):
    stack.openai.status = 400
    stack.openai.error_body = {"error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                   "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}
    for _ in range(6):  # above CIRCUIT_BREAKER_THRESHOLD (5)
        response = stack.post()
        assert response.status_code == 200, response.text
        assert response.json()["provider"] == "anthropic" and response.json()["fallback"]
    assert redis_direct.get("circuit:openai:failures") is None
    assert not redis_direct.exists("circuit:openai:open")
    rows = sql("SELECT primary_outcome, fallback_reason FROM generations")
    assert rows == [("misconfigured", "unsupported_parameter")] * 6


def test_misconfiguration_is_reported_once_per_window_and_counted_in_monitoring(stack, capsys):
    stack.openai.status = 401
    for _ in range(3):
        assert stack.post().json()["provider"] == "anthropic"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    logged = [x for x in lines if x["event"] == "provider_misconfigured"]
    reported = [x for x in lines if x["event"] == "error" and x.get("component") == "llm"]
    assert len(logged) == 3 and len(reported) == 1
    assert reported[0]["reason"] == "misconfigured:auth_error"
    dashboard = monitoring.dashboard()
    assert dashboard["llm"]["1h"]["provider_misconfigured"] == 3
    [alert] = [a for a in dashboard["alerts"] if a["metric"] == "provider_misconfigured"]
    assert alert["level"] == "critical" and alert["value"] == 3


def test_unknown_model_on_both_providers_is_502_provider_misconfigured(stack, sql):
    stack.openai.models, stack.anthropic.models = ["gpt-5.4-mini"], ["claude-haiku-5-5"]
    stack.configure(OPENAI_MODEL="gpt-4o-mini", ANTHROPIC_MODEL="claude-3-5-haiku-latest")
    error = _error(stack.post(), 502, "provider_misconfigured")
    assert error["quota"]["used"] == 0
    assert sql("SELECT status, primary_outcome, attempts FROM generations")[0][:2] == \
        ("failed", "misconfigured")


def test_context_too_long_on_anthropic_is_the_callers_400(stack):
    stack.configure(OPENAI_API_KEY="")
    stack.anthropic.status = 400
    stack.anthropic.error_body = {"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000"}}
    _error(stack.post(), 400, "provider_rejected")


# --- issue 11 §2: only provider-side outcomes move the breaker ---------------------------

def test_five_requests_that_fail_locally_do_not_open_the_breaker(stack, sql, redis_direct):
    """A lone surrogate can't be encoded by either SDK: at the edge it is now a 400 (it is
    bad input), and in the domain, where the edge's check can't help, it is a local error
    (re-raised: a 500) that never reaches the breaker and gives the quota back."""
    for _ in range(5):
        _error(stack.post(content=b'{"prompt": "hi \\ud800"}',
                          headers={"content-type": "application/json"}), 400, "invalid_request")
    identity = Identity("user_local", "org_local", "local@example.com", "MEMBER")
    params = generation.GenerationRequest(({"role": "user", "content": "hi \ud800"},), None, 16, None)
    for _ in range(5):
        admission = generation.admit("198.51.100.77", identity)
        with pytest.raises(UnicodeEncodeError):
            generation.generate(identity, params, admission)
    assert redis_direct.get("circuit:openai:failures") is None
    assert not redis_direct.exists("circuit:openai:open")
    assert stack.openai.calls == 0 and stack.anthropic.calls == 0
    assert sql("SELECT status, error_class FROM generations") == \
        [("failed", "UnicodeEncodeError")] * 5
    assert sql("SELECT used FROM generation_usage") == [(0,)]
    body = stack.post().json()
    assert body["provider"] == "openai" and body["fallback"] is False


def test_an_unparseable_provider_reply_counts_and_falls_back(stack, sql, redis_direct):
    stack.openai.success_body = {"object": "not.a.completion"}
    body = stack.post().json()
    assert body["provider"] == "anthropic" and body["fallback"] is True
    assert sql("SELECT primary_outcome, fallback_reason FROM generations") == \
        [("failed", "bad_response")]
    assert redis_direct.get("circuit:openai:failures") == "1"


def test_server_errors_still_count(stack, redis_direct):
    stack.configure(CIRCUIT_BREAKER_THRESHOLD="2")
    stack.openai.status = 503
    stack.post()
    stack.post()
    assert redis_direct.exists("circuit:openai:open")


# --- §4 messages and the provider's request id -------------------------------------------

CONVERSATION = [{"role": "user", "content": "My name is Ada."},
                {"role": "assistant", "content": "Hello Ada."},
                {"role": "user", "content": "What is my name?"}]


def test_messages_are_sent_to_openai_with_system_first(stack, sql):
    response = stack.post({"messages": CONVERSATION, "system": "Be brief"})
    assert response.status_code == 200, response.text
    assert stack.openai.requests[0]["json"]["messages"] == \
        [{"role": "system", "content": "Be brief"}, *CONVERSATION]


def test_messages_are_sent_to_anthropic_with_system_separate(stack):
    stack.openai.status = 500
    assert stack.post({"messages": CONVERSATION, "system": "Be brief"}).json()["provider"] == \
        "anthropic"
    sent = stack.anthropic.requests[0]["json"]
    assert sent["system"] == "Be brief" and sent["messages"] == CONVERSATION


@pytest.mark.parametrize("body,field", [
    ({"prompt": "hi", "messages": CONVERSATION}, "prompt"),
    ({}, "prompt"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x", "name": "n"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "  "}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x" * 20_001}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}] * 51}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 20_000}] * 4}, "messages"),
    ({"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
     "messages"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "messages"),
])
def test_bad_messages_are_400_naming_the_field(stack, sql, body, field):
    error = _error(stack.post(body), 400, "invalid_request")
    assert error["field"] == field
    assert sql("SELECT count(*) FROM generations") == [(0,)]
    assert stack.openai.calls == 0


def test_provider_request_id_is_in_the_response_and_the_row(stack, sql):
    body = stack.post().json()
    assert body["provider_request_id"] == stack.openai.last_request_id
    assert body["provider_request_id"].startswith("req_")
    assert sql("SELECT provider_request_id FROM generations") == [(body["provider_request_id"],)]
    stack.openai.status = 500
    fallback = stack.post().json()
    assert fallback["provider_request_id"] == stack.anthropic.last_request_id
    [attempts] = sql("SELECT attempts FROM generations WHERE provider = 'anthropic'")[0]
    assert attempts[0]["request_id"] and attempts[0]["request_id"] != fallback["provider_request_id"]


def test_a_failed_generation_keeps_the_last_providers_request_id(stack, sql):
    stack.configure(ANTHROPIC_API_KEY="")
    stack.openai.status = 500
    stack.post()
    assert sql("SELECT provider_request_id FROM generations") == [(stack.openai.last_request_id,)]

