"""OpenAI chat completions through the official SDK."""

from lib.generation.llm.clients import client
from lib.generation.llm.types import Reply


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
