"""The one model table: per model family, its provider, which parameters it accepts and its
price (from lib.generation.pricing's versioned tables). Requests are built from it
(`openai_chat.request`, `anthropic_messages.request`), streaming or not.

Families match by longest prefix ending at a dash, like prices: `gpt-5.4-mini-2026-03-17`
is `gpt-5.4-mini`. A model not in the table gets the safe defaults for its provider: on
OpenAI `max_completion_tokens` (every current chat model accepts it; the GPT-5 families and
the o-series refuse `max_tokens`) and temperature only when the caller gave one; Anthropic's
Messages API always takes `max_tokens`.

`temperature=False` means the model refuses any temperature other than its default (the
GPT-5 families and the o-series answer 400 to anything else): the caller's value is dropped
rather than sent to be refused. Pure: no I/O, no SDK import.
"""

from dataclasses import dataclass

from lib.generation import pricing

MAX_COMPLETION_TOKENS, MAX_TOKENS = "max_completion_tokens", "max_tokens"


@dataclass(frozen=True)
class ModelSpec:
    family: str | None  # the table key that matched; None = not in the table (defaults)
    provider: str
    tokens_param: str  # MAX_COMPLETION_TOKENS | MAX_TOKENS
    temperature: bool | None  # True accepted, False refused, None unknown (sent only if given)

    def price(self, model: str, version: str = pricing.CURRENT_VERSION) -> pricing.Price:
        return pricing.price_for(model, version)


# family: (provider, tokens parameter, temperature accepted)
MODELS: dict[str, tuple[str, str, bool]] = {
    # OpenAI: the GPT-4o and GPT-4.1 families still take max_tokens and any temperature.
    "gpt-4o": ("openai", MAX_TOKENS, True),
    "gpt-4o-mini": ("openai", MAX_TOKENS, True),
    "gpt-4.1": ("openai", MAX_TOKENS, True),
    "gpt-4.1-mini": ("openai", MAX_TOKENS, True),
    "gpt-4.1-nano": ("openai", MAX_TOKENS, True),
    # Reasoning models: max_completion_tokens only, temperature fixed at its default.
    "gpt-5": ("openai", MAX_COMPLETION_TOKENS, False),
    "gpt-5.1": ("openai", MAX_COMPLETION_TOKENS, False),
    "gpt-5.2": ("openai", MAX_COMPLETION_TOKENS, False),
    "gpt-5.4": ("openai", MAX_COMPLETION_TOKENS, False),
    "gpt-5.4-mini": ("openai", MAX_COMPLETION_TOKENS, False),
    "gpt-5.4-nano": ("openai", MAX_COMPLETION_TOKENS, False),
    "gpt-5.5": ("openai", MAX_COMPLETION_TOKENS, False),
    "o1": ("openai", MAX_COMPLETION_TOKENS, False),
    "o3": ("openai", MAX_COMPLETION_TOKENS, False),
    "o3-mini": ("openai", MAX_COMPLETION_TOKENS, False),
    "o4-mini": ("openai", MAX_COMPLETION_TOKENS, False),
    # Anthropic: the Messages API requires max_tokens; temperature 0..1.
    "claude-3-5-haiku": ("anthropic", MAX_TOKENS, True),
    "claude-haiku-4-5": ("anthropic", MAX_TOKENS, True),
    # Haiku 5.5 answers 400 to temperature / top_p / top_k (its migration notes).
    "claude-haiku-5-5": ("anthropic", MAX_TOKENS, False),
    "claude-sonnet-4": ("anthropic", MAX_TOKENS, True),
    "claude-sonnet-4-6": ("anthropic", MAX_TOKENS, True),
    "claude-sonnet-5": ("anthropic", MAX_TOKENS, True),
}
_DEFAULT_TOKENS_PARAM = {"openai": MAX_COMPLETION_TOKENS, "anthropic": MAX_TOKENS}


def spec_for(provider: str, model: str) -> ModelSpec:
    """The table's entry for `model` on `provider` (longest prefix), or the provider's safe
    defaults. Pure."""
    matches = [key for key, row in MODELS.items()
               if row[0] == provider and (model == key or model.startswith(key + "-"))]
    if not matches:
        return ModelSpec(None, provider, _DEFAULT_TOKENS_PARAM[provider], None)
    family = max(matches, key=len)
    _, tokens_param, temperature = MODELS[family]
    return ModelSpec(family, provider, tokens_param, temperature)


def sampling(spec: ModelSpec, max_tokens: int, temperature: float | None) -> dict:
    """The token cap and temperature arguments `spec` accepts. Pure."""
    args: dict = {spec.tokens_param: max_tokens}
    if temperature is not None and spec.temperature is not False:
        args["temperature"] = temperature
    return args
