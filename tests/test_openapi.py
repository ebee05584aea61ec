"""openapi.yaml is the contract: it validates as OpenAPI 3.1, it names every route and verb the
handlers answer, and a seeded, bounded schemathesis run over every operation (valid tokens,
signatures and secrets supplied; positive and negative examples) finds no 5xx, no hang and no
response that the document does not describe. (Every response of the route tests is checked
against it too: see the `serve` fixture.)"""

import json
from collections import Counter

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from devtools.fake_stripe import FakeStripe
from devtools.serve import load_handler
from devtools.services import ROOT
from tests.support.openapi import SPEC_PATH, load_spec
from tests.support.stripe_signing import BILLING_ENV, signature
from tests.support.tokens import mint_token

EXAMPLES_PER_OPERATION = 25  # per generation mode; the run is seeded, so it is the same every time
SEED = 20261202
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
CRON_SECRET = "fuzz-cron-secret-0123456789abcdef"


def _api_files() -> dict[str, type]:
    return {handler.route: handler for handler in
            (load_handler(path.relative_to(ROOT).as_posix()) for path in sorted((ROOT / "api").rglob("*.py")))}


def test_the_document_is_valid_openapi_3_1():
    document = load_spec()
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_every_route_and_verb_is_described_and_nothing_else():
    paths = load_spec()["paths"]
    handlers = _api_files()
    assert set(paths) == set(handlers)
    for route, handler in handlers.items():
        answered = {verb.lower() for verb in handler.allowed_methods()} - {"head"}
        assert set(paths[route]) == answered, route


@pytest.fixture
def fuzz_env(stack, monkeypatch):
    """The generate stack (fake providers, real tokens), plus the webhook secret, the cron
    secret, a local Stripe API for the reconciliation and generous limits, so that a valid
    example is limited by nothing but itself."""
    stripe_api = FakeStripe(api_key="sk_test_fuzz_0123456789")
    stack.configure(**BILLING_ENV, CRON_SECRET=CRON_SECRET, QUOTA_TRIAL="100000",
                    RATE_LIMIT_IP="100000/60s", RATE_LIMIT_USER="100000/60s",
                    AUTO_BLOCK_THRESHOLD="100000", OPERATOR_ORG_IDS="org_fuzz",
                    STRIPE_SECRET_KEY="sk_test_fuzz_0123456789", STRIPE_API_BASE=stripe_api.url)
    yield stack
    stripe_api.close()


def _auth_headers(case, body: bytes | None) -> dict[str, str]:
    route = case.operation.path
    if route in ("/api/generate", "/api/admin/monitoring"):
        return {"Authorization": f"Bearer {mint_token('user_fuzz', org_id='org_fuzz', role='OWNER')}"}
    if route.startswith("/api/cron/"):
        return {"Authorization": f"Bearer {CRON_SECRET}"}
    if route == "/api/webhooks/stripe":
        return {"Stripe-Signature": signature(body or b"", [BILLING_ENV["STRIPE_WEBHOOK_SECRET"]])}
    return {}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_a_seeded_fuzz_of_every_operation_finds_no_5xx_and_no_undocumented_answer(fuzz_env, serve, mode):
    urls = {route: serve(f"api{route.removeprefix('/api')}.py") for route in _api_files()}
    schema = schemathesis.openapi.from_path(SPEC_PATH)
    operations = [result.ok() for result in schema.get_all_operations()]
    statuses: Counter = Counter()
    session = requests.Session()

    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  derandomize=False, suppress_health_check=list(HealthCheck),
                  phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        @hypothesis.seed(SEED)
        def run(case):
            kwargs = {}
            body = None
            if case.operation.path == "/api/webhooks/stripe" and case.body is not NOT_SET:
                # Stripe signs the exact bytes it sends: serialise here, then sign those.
                body = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
                kwargs["data"] = body
            response = case.call(base_url=urls[case.operation.path], session=session,
                                 headers=_auth_headers(case, body), timeout=15, **kwargs)
            statuses[(case.operation.method.upper(), case.operation.path, response.status_code)] += 1
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            # Nothing to negate (GET /api/health takes no input at all).
            assert mode == GenerationMode.NEGATIVE and not operation.body and not list(operation.iter_parameters())

    session.close()
    total = sum(statuses.values())
    print(f"\nschemathesis {mode}: {total} requests;",
          ", ".join(f"{m} {p} {s}: {n}" for (m, p, s), n in sorted(statuses.items())))
    assert total >= len(operations) * 5  # every operation was really exercised
    assert not [key for key in statuses if key[2] >= 500]
