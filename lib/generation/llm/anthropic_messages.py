"""Anthropic messages through the official SDK (only reached when a fallback happens)."""

from lib.generation.llm import models
from lib.generation.llm.clients import client
from lib.generation.llm.types import BadProviderResponse, Reply, TextStream


def request(model: str, messages, system: str | None, max_tokens: int,
            temperature: float | None) -> dict:
    """The messages.create arguments for `model` (from the model table): `system` is its own
    parameter, the conversation alternates user/assistant. Pure; shared with streaming."""
    spec = models.spec_for("anthropic", model)
    args = {"model": model, **models.sampling(spec, max_tokens, temperature),
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    if system:
        args["system"] = system
    return args


def complete(api_key: str, base_url: str | None, model: str, messages, system: str | None,
             max_tokens: int, temperature: float | None, timeout: float) -> Reply:
    response = client("anthropic", api_key, base_url).messages.create(
        **request(model, messages, system, max_tokens, temperature), timeout=timeout)
    content = getattr(response, "content", None)
    if not isinstance(content, list):
        raise BadProviderResponse("message without content")
    text = "".join(getattr(block, "text", "") for block in content
                   if getattr(block, "type", None) == "text")
    usage = response.usage
    return Reply(text=text, model=response.model or model,
                 input_tokens=usage.input_tokens if usage else 0,
                 output_tokens=usage.output_tokens if usage else 0,
                 request_id=getattr(response, "_request_id", None))


def stream(api_key: str, base_url: str | None, model: str, messages, system: str | None,
           max_tokens: int, temperature: float | None, timeout: float) -> TextStream:
    """The same request with `stream: true`: input tokens come in message_start, the
    cumulative output tokens in message_delta, text in content_block_delta text_delta."""
    response = client("anthropic", api_key, base_url).messages.create(
        **request(model, messages, system, max_tokens, temperature), timeout=timeout,
        stream=True)
    out = TextStream(model, response.close)

    def texts():
        for event in response:
            if event.type == "message_start":
                out.model = event.message.model or out.model
                out.input_tokens = event.message.usage.input_tokens
                out.output_tokens = event.message.usage.output_tokens
            elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                if event.delta.text:
                    yield event.delta.text
            elif event.type == "message_delta" and event.usage is not None:
                out.output_tokens = event.usage.output_tokens
                if getattr(event.usage, "input_tokens", None) is not None:
                    out.input_tokens = event.usage.input_tokens

    out.texts = texts()
    return out
