"""OpenAI chat completions through the official SDK (imported on first use: ~0.5-1.5 s)."""

from lib.llm.types import Reply

_clients: dict[tuple, object] = {}


def client(api_key: str, base_url: str | None):
    """One SDK client per process and key (its connection pool is reused across calls).
    `max_retries=0`: the SDK's own backoff would spend the deadline the fallback needs."""
    key = (api_key, base_url)
    if key not in _clients:
        import openai

        _clients[key] = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    return _clients[key]


def complete(api_key: str, base_url: str | None, model: str, prompt: str, system: str | None,
             max_tokens: int, temperature: float | None, timeout: float) -> Reply:
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": prompt}]
    extra = {} if temperature is None else {"temperature": temperature}
    response = client(api_key, base_url).chat.completions.create(
        model=model, messages=messages, max_tokens=max_tokens, timeout=timeout, **extra)
    usage = response.usage
    text = response.choices[0].message.content or "" if response.choices else ""
    return Reply(text=text, model=response.model or model,
                 input_tokens=usage.prompt_tokens if usage else 0,
                 output_tokens=usage.completion_tokens if usage else 0)
