"""Anthropic messages through the official SDK, imported only when a fallback happens
(the SDK costs ~1-3 s to import, which the primary path must not pay)."""

from lib.llm.types import Reply

_clients: dict[tuple, object] = {}


def client(api_key: str, base_url: str | None):
    """One SDK client per process and key; `max_retries=0` (one overall deadline instead)."""
    key = (api_key, base_url)
    if key not in _clients:
        import anthropic

        _clients[key] = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0)
    return _clients[key]


def complete(api_key: str, base_url: str | None, model: str, prompt: str, system: str | None,
             max_tokens: int, temperature: float | None, timeout: float) -> Reply:
    extra = {} if temperature is None else {"temperature": temperature}
    if system:
        extra["system"] = system
    response = client(api_key, base_url).messages.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}],
        timeout=timeout, **extra)
    text = "".join(getattr(block, "text", "") for block in response.content
                   if getattr(block, "type", None) == "text")
    usage = response.usage
    return Reply(text=text, model=response.model or model,
                 input_tokens=usage.input_tokens if usage else 0,
                 output_tokens=usage.output_tokens if usage else 0)
