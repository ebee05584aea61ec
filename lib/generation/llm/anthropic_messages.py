"""Anthropic messages through the official SDK (only reached when a fallback happens)."""

from lib.generation.llm.clients import client
from lib.generation.llm.types import Reply


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
