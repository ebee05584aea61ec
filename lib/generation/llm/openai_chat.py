"""OpenAI chat completions through the official SDK."""

from lib.generation.llm import models
from lib.generation.llm.clients import client
from lib.generation.llm.types import BadProviderResponse, Reply, TextStream


def request(model: str, messages, system: str | None, max_tokens: int,
            temperature: float | None) -> dict:
    """The chat.completions.create arguments for `model` (from the model table): `system`
    as the first message, then the conversation. Pure; shared with streaming."""
    spec = models.spec_for("openai", model)
    sent = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": m["role"], "content": m["content"]} for m in messages]
    return {"model": model, "messages": sent, **models.sampling(spec, max_tokens, temperature)}


def complete(api_key: str, base_url: str | None, model: str, messages, system: str | None,
             max_tokens: int, temperature: float | None, timeout: float) -> Reply:
    response = client("openai", api_key, base_url).chat.completions.create(
        **request(model, messages, system, max_tokens, temperature), timeout=timeout)
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        raise BadProviderResponse("chat completion without choices")
    usage = response.usage
    text = choices[0].message.content or "" if choices else ""
    return Reply(text=text, model=response.model or model,
                 input_tokens=usage.prompt_tokens if usage else 0,
                 output_tokens=usage.completion_tokens if usage else 0,
                 request_id=getattr(response, "_request_id", None))


def stream(api_key: str, base_url: str | None, model: str, messages, system: str | None,
           max_tokens: int, temperature: float | None, timeout: float) -> TextStream:
    """The same request with `stream: true`; usage arrives in the last chunk (include_usage).
    `timeout` bounds the connection and each read (the wait for every next chunk)."""
    response = client("openai", api_key, base_url).chat.completions.create(
        **request(model, messages, system, max_tokens, temperature), timeout=timeout,
        stream=True, stream_options={"include_usage": True})
    out = TextStream(model, response.close)

    def texts():
        for chunk in response:
            out.model = chunk.model or out.model
            if chunk.usage is not None:
                out.input_tokens = chunk.usage.prompt_tokens
                out.output_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    yield choice.delta.content

    out.texts = texts()
    return out
