"""Anthropic messages through the official SDK (only reached when a fallback happens)."""

from lib.generation.llm.clients import client
from lib.generation.llm.types import Reply, TextStream


def complete(api_key: str, base_url: str | None, model: str, prompt: str, system: str | None,
             max_tokens: int, temperature: float | None, timeout: float) -> Reply:
    extra = {} if temperature is None else {"temperature": temperature}
    if system:
        extra["system"] = system
    response = client("anthropic", api_key, base_url).messages.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}],
        timeout=timeout, **extra)
    text = "".join(getattr(block, "text", "") for block in response.content
                   if getattr(block, "type", None) == "text")
    usage = response.usage
    return Reply(text=text, model=response.model or model,
                 input_tokens=usage.input_tokens if usage else 0,
                 output_tokens=usage.output_tokens if usage else 0)


def stream(api_key: str, base_url: str | None, model: str, prompt: str, system: str | None,
           max_tokens: int, temperature: float | None, timeout: float) -> TextStream:
    """The same request with `stream: true`: input tokens come in message_start, the
    cumulative output tokens in message_delta, text in content_block_delta text_delta."""
    extra = {} if temperature is None else {"temperature": temperature}
    if system:
        extra["system"] = system
    response = client("anthropic", api_key, base_url).messages.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}],
        timeout=timeout, stream=True, **extra)
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
