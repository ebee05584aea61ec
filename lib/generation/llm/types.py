"""What a provider call returns and how each attempt ended."""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Reply:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    request_id: str | None = None  # the provider's own request id (x-request-id / request-id)


class BadProviderResponse(Exception):
    """The provider answered 2xx with something that is not a completion (a provider-side
    failure: counts towards the circuit breaker and falls back)."""


@dataclass(frozen=True)
class Attempt:
    provider: str
    model: str
    # succeeded | failed (outage-class, falls back) | misconfigured (our configuration is
    # wrong: falls back) | rejected (4xx from the request) | skipped
    outcome: str
    reason: str | None = None  # rate_limited, server_error, timeout, connection_error, auth_error, ...
    error_class: str | None = None
    http_status: int | None = None
    latency_ms: int | None = None
    request_id: str | None = None

    def as_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}
