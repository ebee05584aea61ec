"""POST /api/generate at the HTTP edge: reads the request, runs lib.generation.generation's
steps in their order, and says the result in HTTP.

Here and only here: the bearer token, the client IP, the JSON body, the Retry-After and
X-RateLimit-* headers and the 200 body. The token is verified before the Redis checks (so
the user's limiter rides in their round trip) and the body is read only after them, so an
IP over its limit is refused before anything else is looked at. The 200 leaves before the
row's accounting is committed and the idempotent replay stored (`Response.after`): the
caller waits for neither.
"""

import math

from lib import auth
from lib.errors import AppError, BadRequest, RateLimited
from lib.generation import generation, idempotency, rate_limits
from lib.http import EventStream, Request, Response, error_body


def post(request: Request) -> Response | EventStream:
    identity, auth_error = None, None
    try:
        identity = auth.authenticate(request.bearer_token())
    except AppError as exc:
        auth_error = exc
    try:
        admission = generation.admit(request.client_ip, identity, auth_error)
    except rate_limits.RateLimitExceeded as exc:
        raise rate_limited(exc) from None
    body = request.json()
    stream = wants_stream(body)
    params = generation.parse_generation_request(body)
    limit = admission.user_limit
    headers = rate_limit_headers(limit) if limit is not None else {}
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    if stream:
        if key is not None:  # a stream can't be replayed as it was sent; say so, don't guess
            raise BadRequest("Idempotency-Key is not supported with stream: true",
                             details={"field": "stream"})
        started = generation.start_stream(identity, params, admission)
        return EventStream(stream_events(started, request.request_id), headers)
    held = idempotency.claim(identity, key, body) if key is not None else None
    if held is not None and held.replay is not None:
        return Response(200, held.replay, {**headers, idempotency.REPLAYED_HEADER: "true"})
    try:
        result = generation.generate(identity, params, admission)
    except BaseException:
        idempotency.release(held)
        raise
    payload = response_body(result)

    def after() -> None:  # once the answer is out: the row's accounting, then the replay
        try:
            result.record()
        finally:
            idempotency.store(held, payload)

    return Response(200, payload, headers, after=after)


def response_body(result: generation.Generation) -> dict:
    """The 200 body: also the stored response an idempotent retry gets again, and the data of
    a stream's `done` event."""
    return {
        "id": str(result.id), "text": result.text, "provider": result.provider,
        "model": result.model, "fallback": result.fallback,
        "usage": {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens,
                  "total_tokens": result.input_tokens + result.output_tokens},
        "cost_usd": float(result.cost_usd), "quota": result.quota,
        "provider_request_id": result.provider_request_id}


def wants_stream(body: dict) -> bool:
    """Take the transport flag `stream` out of the body (the rest is the generation's)."""
    stream = body.pop("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream: must be true or false", details={"field": "stream"})
    return stream


def stream_events(started: generation.GenerationStream, request_id: str):
    """`delta` events, then `done` with the 200 body, or `error` with the error body when
    the provider broke off. Closed early (the client went away), it closes `started`."""
    try:
        for text in started:
            yield "delta", {"text": text}
    except AppError as exc:
        yield "error", error_body(exc, request_id)
        return
    finally:
        started.close()
    assert started.result is not None
    yield "done", response_body(started.result)


def rate_limit_headers(limit: rate_limits.LimitResponse) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit.limit), "X-RateLimit-Remaining": str(limit.remaining),
            "X-RateLimit-Reset": str(math.ceil(limit.reset))}


def rate_limited(exc: rate_limits.RateLimitExceeded) -> RateLimited:
    """The 429 for an exhausted limit, with Retry-After and the X-RateLimit-* headers."""
    return RateLimited(exc.message, details=exc.details,
                       headers={"Retry-After": str(exc.retry_after),
                                **rate_limit_headers(exc.limit)})
