"""OpenAI chat completions through the official SDK."""

from lib.generation.llm.clients import client
from lib.generation.llm.types import Reply, TextStream


def complete(api_key: str, base_url: str | None, model: str, prompt: str, system: str | None,
             max_tokens: int, temperature: float | None, timeout: float) -> Reply:
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": prompt}]
    extra = {} if temperature is None else {"temperature": temperature}
    response = client("openai", api_key, base_url).chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, timeout=timeout, **extra)
    usage = response.usage
    text = response.choices[0].message.content or "" if response.choices else ""
    return Reply(text=text, model=response.model or model,
                 input_tokens=usage.prompt_tokens if usage else 0,
                 output_tokens=usage.completion_tokens if usage else 0)


def stream(api_key: str, base_url: str | None, model: str, prompt: str, system: str | None,
           max_tokens: int, temperature: float | None, timeout: float) -> TextStream:
    """The same request with `stream: true`; usage arrives in the last chunk (include_usage).
    `timeout` bounds the connection and each read (the wait for every next chunk)."""
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": prompt}]
    extra = {} if temperature is None else {"temperature": temperature}
    response = client("openai", api_key, base_url).chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, timeout=timeout, stream=True,
        stream_options={"include_usage": True}, **extra)
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
