"""Anthropic messages through the official SDK (only reached when a fallback happens)."""

from lib.generation.llm import models
from lib.generation.llm.clients import client
from lib.generation.llm.types import BadProviderResponse, Reply


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
