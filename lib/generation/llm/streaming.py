"""Streamed completions: the same provider order, fallback and first-answer deadline as
`llm.complete`, with one difference: a provider has "answered" once its first text delta
arrived. Until then any failure falls back exactly as in `complete`; after it, the answer is
that provider's, and a failure is the caller's to report (no fallback: the client already
has part of the text).

The first delta must come within the provider's share of LLM_TIMEOUT_S (the SDK's timeout
bounds the connection and every read, so also the gap between two chunks). The whole
answer must end by STREAM_DEADLINE_S after the stream opened; devtools/vercel_config.py
gives api/generate.py a maxDuration above it (a test checks).
"""

import time

from lib.config import settings
from lib.generation.llm import (PRIMARY, PRIMARY_SHARE, NoProviderConfigured, Outcome,
                                classify, exhausted, providers, record_failure)
from lib.generation.llm.types import Attempt, TextStream

# 4096 tokens at 20 tokens/s (a slow small model) is 205 s; maxDuration is 300 s.
STREAM_DEADLINE_S = 270
_MIN_ATTEMPT_S = 0.5


def _stream_module(name: str):
    from lib.generation.llm import anthropic_messages, openai_chat

    return openai_chat if name == "openai" else anthropic_messages


def stream_classify(exc: BaseException) -> tuple[str, str, int | None] | None:
    """`classify`, except that an error event inside a 200 stream (Anthropic's SDK gives it
    status 200, e.g. overloaded_error) is an outage-class failure, not a rejection, and a
    stream with no text is an unparseable reply. None for a local error (re-raised)."""
    if getattr(exc, "status_code", None) == 200:
        return "failed", "stream_error", None
    if isinstance(exc, EmptyStream):
        return "failed", "bad_response", None
    return classify(exc)


def open_stream(messages, system: str | None, max_tokens: int, temperature: float | None,
                skip_primary_reason: str | None = None) -> tuple[Outcome, TextStream, str]:
    """Open the first provider stream that yields a text delta. Returns (outcome, the open
    stream, its first text); outcome.provider names who answers and its last attempt is
    `succeeded` with the time to the first delta. Raises like `complete`."""
    configured = providers()
    if not configured:
        raise NoProviderConfigured()
    outcome = Outcome()
    if configured[0].name != PRIMARY:
        outcome.attempts.append(Attempt(PRIMARY, settings().openai_model, "skipped",
                                        "not_configured"))
    elif skip_primary_reason and len(configured) > 1:
        outcome.attempts.append(Attempt(PRIMARY, configured[0].model, "skipped",
                                        skip_primary_reason))
        configured = configured[1:]
    timeout_s = settings().llm_timeout_s
    deadline = time.monotonic() + timeout_s
    for index, provider in enumerate(configured):
        prepared = time.monotonic()
        provider.prepare()  # a cold SDK import is not provider time (as in `complete`)
        deadline += time.monotonic() - prepared
        remaining = deadline - time.monotonic()
        has_fallback = index < len(configured) - 1
        budget = min(remaining, timeout_s * PRIMARY_SHARE) if has_fallback else remaining
        if budget < _MIN_ATTEMPT_S:
            outcome.attempts.append(Attempt(provider.name, provider.model, "skipped", "deadline"))
            continue
        started = time.monotonic()
        opened: TextStream | None = None
        try:
            opened = _stream_module(provider.name).stream(
                provider.api_key, provider.base_url, provider.model, messages, system, max_tokens,
                temperature, budget)
            first = next((text for text in opened.texts if text), None)
            if first is None:
                raise EmptyStream()
        except Exception as exc:  # provider-side failures are classified; the rest re-raised
            if opened is not None:
                opened.close()
            classified = stream_classify(exc)
            if classified is None:
                raise
            record_failure(outcome, provider, classified, exc, _ms(started))
            continue
        outcome.attempts.append(Attempt(provider.name, opened.model, "succeeded",
                                        latency_ms=_ms(started)))
        outcome.provider = provider.name
        return outcome, opened, first
    raise exhausted(outcome)


class EmptyStream(Exception):
    """The stream ended without any text: treated like an unparseable reply."""


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
