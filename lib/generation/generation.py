"""One LLM generation for the caller's organization (served by lib.routes.generate).

The order is cheapest first, and each step runs only if the previous ones passed:
1. `admit`: one Redis round trip: blocked IP, then the one rate limit that applies and the
   OpenAI circuit state; blocked -> 403; with a valid token, user limit -> 429; without one,
   IP limit -> 429 (and a strike towards the auto-block), else 401. The edge verifies the
   token (CPU only with CLERK_JWT_KEY) before that round trip, so the round trip knows
   which limiter to run.
2. `parse_generation_request`: the body is validated (400 naming the field);
3. `generate`: one Postgres statement provisions the caller and reserves a unit of quota
   (402 when the trial ended, the subscription is inactive or the month's quota is used up);
4. the providers are called (lib.generation.llm); 5. one statement closes the generations
   row: `quota.release` giving the unit back when no provider answered, else
   `quota.record_success`, which the edge runs after the answer is written
   (`Generation.record`, lib.http's `Response.after`).
Redis trouble fails open (reported, request served, the Postgres quota still holds);
Postgres trouble is a 503 with nothing written. Plain values in and out: no Request here.
"""

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from decimal import Decimal
from uuid import UUID

from psycopg.types.json import Jsonb

from lib import redis
from lib.auth import Identity
from lib.errors import AppError, BadRequest, IpBlocked, Unauthorized
from lib.generation import circuit_breaker, llm, pricing, quota, rate_limits
from lib.generation.llm import streaming
from lib.observability import log, report, report_degraded

MAX_PROMPT_CHARS = 20_000
MAX_SYSTEM_CHARS = 20_000
MAX_MESSAGES = 50
MAX_CONVERSATION_CHARS = 60_000  # the sum of every message's content
MAX_TOKENS = 4096
DEFAULT_MAX_TOKENS = 1024
_FIELDS = {"prompt", "messages", "system", "max_tokens", "temperature"}
ROLES = ("user", "assistant")


@dataclass(frozen=True)
class GenerationRequest:
    """`messages` is the conversation ([{"role", "content"}], first and last from the user);
    a `prompt` is one user message."""

    messages: tuple[dict, ...]
    system: str | None
    max_tokens: int
    temperature: float | None


def _field_error(name: str, message: str) -> BadRequest:
    return BadRequest(f"{name}: {message}", details={"field": name})


def _text_error(text: str) -> str | None:
    """Why `text` can't be sent to a provider, or None: a NUL, or a lone surrogate (valid in
    JSON's \\uXXXX escapes, not encodable as UTF-8, so the SDKs fail locally; counted as a
    provider failure, five of them would open the circuit breaker for every tenant)."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogates"
    return None


def _prompt_text(name: str, value, limit: int) -> str:
    if not isinstance(value, str):
        raise _field_error(name, "required, a string")
    if not 1 <= len(value) <= limit or not value.strip():
        raise _field_error(name, f"must be 1 to {limit} characters of text, not blank")
    problem = _text_error(value)
    if problem:
        raise _field_error(name, problem)
    return value


def _messages(value) -> tuple[dict, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_MESSAGES:
        raise _field_error("messages", f"must be a list of 1 to {MAX_MESSAGES} messages")
    parsed, total = [], 0
    for index, message in enumerate(value):
        name = f"messages[{index}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise _field_error(name, 'must be {"role": ..., "content": ...}')
        if message["role"] not in ROLES:
            raise _field_error(f"{name}.role", "must be \"user\" or \"assistant\"")
        content = _prompt_text(f"{name}.content", message["content"], MAX_PROMPT_CHARS)
        total += len(content)
        parsed.append({"role": message["role"], "content": content})
    if total > MAX_CONVERSATION_CHARS:
        raise _field_error("messages", f"at most {MAX_CONVERSATION_CHARS} characters in all")
    if parsed[0]["role"] != "user" or parsed[-1]["role"] != "user":
        raise _field_error("messages", "the first and the last message must be the user's")
    return tuple(parsed)


def parse_generation_request(body: dict) -> GenerationRequest:
    """Validate the JSON body; raises BadRequest naming the offending field. Pure."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise _field_error(unknown[0][:64], "unknown field")
    if ("prompt" in body) == ("messages" in body):
        raise _field_error("prompt", "send exactly one of prompt and messages")
    if "messages" in body:
        messages = _messages(body["messages"])
    else:
        messages = ({"role": "user",
                     "content": _prompt_text("prompt", body["prompt"], MAX_PROMPT_CHARS)},)
    system = body.get("system")
    if system is not None and (not isinstance(system, str) or len(system) > MAX_SYSTEM_CHARS):
        raise _field_error("system", f"must be a string of at most {MAX_SYSTEM_CHARS} characters")
    problem = _text_error(system or "")
    if problem:
        raise _field_error("system", problem)
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or \
            not 1 <= max_tokens <= MAX_TOKENS:
        raise _field_error("max_tokens", f"must be an integer from 1 to {MAX_TOKENS}")
    temperature = body.get("temperature")
    if temperature is not None:
        # A range check, not math.isfinite: JSON `10**400` parses to a Python int that
        # isfinite can't convert (OverflowError); the comparisons also refuse NaN and inf.
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
                not 0 <= temperature <= 2:
            raise _field_error("temperature", "must be a number from 0 to 2")
        temperature = float(temperature)
    return GenerationRequest(messages, system or None, max_tokens, temperature)


@dataclass(frozen=True)
class Admission:
    """What the batched Redis checks let through: the user's limiter state (None when Redis
    was unreachable: fail open) and the primary provider's circuit breaker."""

    user_limit: rate_limits.LimitResponse | None
    breaker: circuit_breaker.BreakerState


def _nothing_left() -> None:
    pass


@dataclass(frozen=True)
class Generation:
    """One served generation: the reply and its accounting. `record()` closes its generations
    row (succeeded, with tokens and cost) when that is still to do: `generate` leaves it to the
    edge, which calls it once the answer is written (lib.http's `Response.after`), so the
    caller doesn't wait for that commit. Until it runs the row is `pending`; if it never runs
    (the function died in between), the reclaim turns the row `abandoned` after
    RESERVATION_TIMEOUT_S and gives the unit back, as for any unsettled reservation."""

    id: UUID
    text: str
    provider: str
    model: str
    fallback: bool
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    quota: dict
    provider_request_id: str | None = None
    record: Callable[[], None] = field(default=_nothing_left, repr=False, compare=False)


def _checks(ip: str, user_id: str | None, limit_ip: bool):
    """Run the batched Redis checks (the circuit breaker only for a caller who can reach the
    providers). Fails open: (None, closed breaker) when Redis is down."""
    batch = redis.Batch()
    checks = rate_limits.queue_checks(batch, ip, user_id, limit_ip=limit_ip)
    breaker = circuit_breaker.queue_read(batch, llm.PRIMARY) if user_id else None
    try:
        batch.run()
        return checks(), breaker() if breaker else circuit_breaker.BreakerState(llm.PRIMARY)
    except redis.RedisUnavailable as exc:
        report_degraded("redis", exc, part="rate_limits", fail_open=True)
        return None, circuit_breaker.BreakerState(llm.PRIMARY)


def admit(client_ip: str, identity: Identity | None,
          auth_error: AppError | None = None) -> Admission:
    """Step 1 (one Redis round trip). `identity` is the verified caller, or None with
    `auth_error` saying why not. A blocked IP is refused either way. A verified caller is
    then limited per user only (an office behind one NAT is not one client); a request
    without a valid token is limited per IP, its rejection is a strike towards the
    auto-block, and if let through it gets `auth_error`. A 5xx `auth_error` (keys
    unavailable, misconfiguration) is ours, not the client's: no IP count, no strike.
    Raises IpBlocked, RateLimitExceeded (user or IP) or `auth_error`."""
    server_fault = auth_error is not None and auth_error.status >= 500
    checks, breaker = _checks(client_ip, identity.user_id if identity else None,
                              limit_ip=not server_fault)
    if checks is not None and checks.blocked:
        raise IpBlocked()
    if identity is None:
        if checks is not None and checks.ip is not None and not checks.ip.allowed:
            rate_limits.block_if_struck_out(client_ip, checks.strikes)
            raise rate_limits.rejection(checks.ip, "IP address")
        raise auth_error or Unauthorized()
    if checks is not None and checks.user is not None and not checks.user.allowed:
        raise rate_limits.rejection(checks.user, "user")
    return Admission(checks.user if checks is not None else None, breaker)


@contextmanager
def _released_on_failure(reservation: quota.Reservation, breaker, started: float):
    """Around the provider call: when no provider answered, the breaker learns the outcome
    and the unit goes back (the 502 carries the row id and the quota); a local error gives
    the unit back too and is re-raised, leaving the breaker alone."""
    try:
        yield
    except llm.ProviderUnavailable as exc:
        _update_breaker(breaker, exc.outcome)
        used = quota.release(reservation, _failure_record(exc.outcome, started))
        raise type(exc)(exc.message, outcome=exc.outcome, details={
            "generation_id": str(reservation.generation_id),
            "quota": reservation.quota(used)}) from exc
    except BaseException as exc:
        quota.release(reservation, _failure_record(llm.Outcome(), started, exc))
        raise


def generate(identity: Identity, params: GenerationRequest,
             admission: Admission) -> Generation:
    """Steps 3-4 for an admitted caller; step 5 for an answer is the returned Generation's
    `record()`, which the caller runs once, after answering. Every call that reaches the
    providers leaves exactly one generations row, closed here when no answer came. Raises
    NoProviderConfigured, the quota refusals (402), DatabaseUnavailable, or
    ProviderUnavailable / ProviderRejected carrying the generation id and the quota after
    the unit was given back."""
    llm.require_provider()
    reservation = quota.reserve(identity)
    breaker = admission.breaker
    started = time.monotonic()
    with _released_on_failure(reservation, breaker, started):
        outcome = llm.complete(params.messages, params.system, params.max_tokens,
                               params.temperature,
                               skip_primary_reason="circuit_open" if breaker.open else None)
    reply = outcome.reply
    price = pricing.price_for(reply.model)
    cost = pricing.cost_usd(price, reply.input_tokens, reply.output_tokens)
    record = {**_common_record(outcome, started), "provider": outcome.provider,
              "model": reply.model, "input_tokens": reply.input_tokens,
              "output_tokens": reply.output_tokens, "cost_usd": cost,
              "price_version": price.version, "provider_request_id": reply.request_id}
    return Generation(reservation.generation_id, reply.text, outcome.provider, reply.model,
                      outcome.fallback, reply.input_tokens, reply.output_tokens, cost,
                      reservation.quota(), reply.request_id,
                      partial(_record_success, reservation, breaker, outcome, record))


def _record_success(reservation: quota.Reservation, breaker: circuit_breaker.BreakerState,
                    outcome: llm.Outcome, record: dict) -> None:
    """Step 5 for an answered generation (`Generation.record`): the breaker learns the
    outcome, the row is closed succeeded with its accounting, and the line is logged."""
    _update_breaker(breaker, outcome)
    try:
        quota.record_success(reservation, record)
    except AppError as exc:
        # The text exists; record_success already retried on a fresh connection. Losing the
        # answer the user already waited for would be worse than a gap in the accounting: the
        # row stays pending, and is reclaimed (abandoned) after RESERVATION_TIMEOUT_S.
        report_degraded("record_generation", exc,
                        generation_id=str(reservation.generation_id))
    log("generation", provider=record["provider"], model=record["model"],
        fallback=outcome.fallback, input_tokens=record["input_tokens"],
        output_tokens=record["output_tokens"], cost_usd=str(record["cost_usd"]))


def _update_breaker(breaker: circuit_breaker.BreakerState, outcome: llm.Outcome) -> None:
    """Only provider-side outcomes move the breaker (issue 11): `failed` (5xx, 429, timeout,
    connection, unparseable reply) counts, a success resets. A misconfiguration, a request the
    provider rejected and a skip leave it alone; a local exception never gets here."""
    primary = next((a for a in outcome.attempts if a.provider == llm.PRIMARY), None)
    if primary is None or primary.outcome not in ("failed", "succeeded"):
        return
    if primary.outcome == "failed":
        circuit_breaker.record_failure(breaker)
    else:
        circuit_breaker.record_success(breaker)


def _common_record(outcome: llm.Outcome, started: float) -> dict:
    return {"latency_ms": round((time.monotonic() - started) * 1000), "fallback": outcome.fallback,
            "fallback_reason": outcome.fallback_reason, "primary_outcome": outcome.primary_outcome,
            "attempts": Jsonb([a.as_json() for a in outcome.attempts])}


def _failure_record(outcome: llm.Outcome, started: float, exc: BaseException | None = None) -> dict:
    tried = [a for a in outcome.attempts if a.outcome != "skipped"]
    return {**_common_record(outcome, started), "provider": outcome.last_provider,
            "model": outcome.model, "provider_request_id": tried[-1].request_id if tried else None,
            "error_class": type(exc).__name__ if exc is not None else outcome.error_class}


# --- streaming ("stream": true) ------------------------------------------------------------

def _estimated_tokens(text: str) -> int:
    """Tokens counted from text when the provider hasn't said yet (~4 characters a token)."""
    return math.ceil(len(text) / 4)


class GenerationStream:
    """A generation whose provider has sent its first delta. Iterate it for the text deltas
    (the first included). When the iteration ends, `result` is the Generation and the row is
    succeeded; a provider failure mid-stream settles the row `failed` with the tokens used so
    far and raises ProviderUnavailable; `close()` before the end (the client went away)
    closes the provider stream and settles the row `cancelled`."""

    def __init__(self, reservation: quota.Reservation, admission: Admission,
                 params: GenerationRequest, outcome: llm.Outcome, provider_stream, first: str,
                 started: float):
        self._reservation, self._admission, self._params = reservation, admission, params
        self._outcome, self._provider_stream, self._first = outcome, provider_stream, first
        self._started = started
        self._texts: list[str] = []
        self.result: Generation | None = None
        self._iterator = self._run()

    def __iter__(self):
        return self._iterator

    def close(self) -> None:
        self._iterator.close()

    def _run(self):
        deadline = time.monotonic() + streaming.STREAM_DEADLINE_S
        settled = False
        try:
            self._texts.append(self._first)
            yield self._first
            for text in self._provider_stream.texts:
                self._texts.append(text)
                yield text
                if time.monotonic() > deadline:
                    raise StreamDeadline()
            self.result = self._succeed()
            settled = True
        except GeneratorExit:
            self._settle("cancelled", None)
            settled = True
            raise
        except Exception as exc:  # the provider broke off: the caller gets an error event
            reason = streaming.stream_classify(exc)[1] if not isinstance(exc, StreamDeadline) \
                else "deadline"
            used = self._settle("failed", exc, reason)
            settled = True
            raise llm.ProviderUnavailable(
                "The LLM provider stopped before the answer was complete", details={
                    "generation_id": str(self._reservation.generation_id),
                    "quota": self._reservation.quota(used)}) from exc
        finally:
            self._provider_stream.close()
            if not settled:  # e.g. a BaseException other than GeneratorExit
                self._settle("failed", None)

    def _usage(self) -> tuple[int, int]:
        s, params = self._provider_stream, self._params
        input_tokens = s.input_tokens if s.input_tokens is not None else \
            _estimated_tokens("".join(m["content"] for m in params.messages) + (params.system or ""))
        output_tokens = s.output_tokens if s.output_tokens is not None else \
            _estimated_tokens("".join(self._texts))
        return input_tokens, output_tokens

    def _record(self) -> dict:
        input_tokens, output_tokens = self._usage()
        model = self._provider_stream.model
        price = pricing.price_for(model)
        return {**_common_record(self._outcome, self._started), "provider": self._outcome.provider,
                "model": model, "input_tokens": input_tokens, "output_tokens": output_tokens,
                "cost_usd": pricing.cost_usd(price, input_tokens, output_tokens),
                "price_version": price.version}

    def _succeed(self) -> Generation:
        _update_breaker(self._admission.breaker, self._outcome)
        record = self._record()
        try:
            quota.record_success(self._reservation, record)
        except AppError as exc:  # as in `generate`: the answer was sent, keep it
            report(exc, component="record_generation",
                   generation_id=str(self._reservation.generation_id))
        log("generation", provider=record["provider"], model=record["model"],
            fallback=self._outcome.fallback, input_tokens=record["input_tokens"],
            output_tokens=record["output_tokens"], cost_usd=str(record["cost_usd"]), stream=True)
        return Generation(self._reservation.generation_id, "".join(self._texts),
                          record["provider"], record["model"], self._outcome.fallback,
                          record["input_tokens"], record["output_tokens"], record["cost_usd"],
                          self._reservation.quota())

    def _settle(self, status: str, exc: BaseException | None, reason: str | None = None) -> int:
        attempts = self._outcome.attempts
        if status == "failed" and attempts and attempts[-1].outcome == "succeeded":
            last = attempts[-1]
            attempts[-1] = llm.Attempt(last.provider, last.model, "failed", reason or "stream_error",
                                       type(exc).__name__ if exc else None, None, last.latency_ms)
            _update_breaker(self._admission.breaker, self._outcome)
        record = {**self._record(), "error_class": type(exc).__name__ if exc else None}
        try:
            used = quota.settle_partial(self._reservation, status, record)
        except AppError as exc2:
            report(exc2, component="record_generation",
                   generation_id=str(self._reservation.generation_id))
            used = self._reservation.used
        log("generation", level="warning", status=status, provider=record["provider"],
            model=record["model"], input_tokens=record["input_tokens"],
            output_tokens=record["output_tokens"], cost_usd=str(record["cost_usd"]), stream=True)
        return used


class StreamDeadline(Exception):
    """The answer did not end within streaming.STREAM_DEADLINE_S."""


def start_stream(identity: Identity, params: GenerationRequest,
                 admission: Admission) -> GenerationStream:
    """Steps 3-4 of `generate` for a streamed answer, up to the provider's first delta. Until
    then everything fails exactly like `generate` (the same errors, the row failed and the
    unit given back), so the edge can still answer with a JSON status."""
    llm.require_provider()
    reservation = quota.reserve(identity)
    breaker = admission.breaker
    started = time.monotonic()
    with _released_on_failure(reservation, breaker, started):
        outcome, provider_stream, first = streaming.open_stream(
            params.messages, params.system, params.max_tokens, params.temperature,
            skip_primary_reason="circuit_open" if breaker.open else None)
    return GenerationStream(reservation, admission, params, outcome, provider_stream, first,
                            started)
