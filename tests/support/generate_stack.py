"""Everything a POST /api/generate test needs: the route over real HTTP, real RS256 tokens,
and local OpenAI/Anthropic servers the real SDKs are pointed at."""

import httpx
import pytest

from lib import config
from devtools.fake_llm import FakeAnthropic, FakeOpenAI
from tests.support.tokens import PUBLIC_PEM, mint_token


class GenerateStack:
    """`post` returns once the request's invocation is over (its row recorded), as the
    platform sees it; a test posting by other means calls `wait_idle()` before reading rows."""

    def __init__(self, url: str, openai: FakeOpenAI, anthropic: FakeAnthropic, monkeypatch,
                 wait_idle=lambda: None):
        self.url, self.openai, self.anthropic = url, openai, anthropic
        self.wait_idle = wait_idle
        self._monkeypatch = monkeypatch
        self.client = httpx.Client(timeout=30)

    def configure(self, **env: str) -> None:
        """Change settings for the running route (it reads them per request)."""
        for key, value in env.items():
            self._monkeypatch.setenv(key, value)
        config.reload()

    def post(self, body=None, *, token: str | None = None, user: str = "user_1",
             org: str | None = "org_1", ip: str = "198.51.100.10", headers: dict | None = None,
             content: bytes | None = None) -> httpx.Response:
        if token is None:
            token = mint_token(user, org_id=org, email=f"{user}@example.com")
        sent = {"x-forwarded-for": ip, **({"authorization": f"Bearer {token}"} if token else {}),
                **(headers or {})}
        if content is not None:
            response = self.client.post(self.url, content=content, headers=sent)
        else:
            response = self.client.post(self.url, json={"prompt": "Say hi"} if body is None
                                        else body, headers=sent)
        self.wait_idle()
        return response


def stack_env(openai: FakeOpenAI, anthropic: FakeAnthropic) -> dict[str, str]:
    return {"CLERK_JWT_KEY": PUBLIC_PEM, "CLERK_SECRET_KEY": "", "CLERK_AUTHORIZED_PARTIES": "",
            "OPENAI_API_KEY": "sk-test-openai", "OPENAI_BASE_URL": openai.base_url,
            "OPENAI_MODEL": "gpt-4o-mini", "ANTHROPIC_API_KEY": "sk-ant-test",
            "ANTHROPIC_BASE_URL": anthropic.base_url, "ANTHROPIC_MODEL": "claude-3-5-haiku-latest",
            "LLM_TIMEOUT_S": "5", "RATE_LIMIT_IP": "1000/60s", "RATE_LIMIT_USER": "1000/60s",
            "QUOTA_TRIAL": "50", "TRIAL_DAYS": "14", "AUTO_BLOCK_THRESHOLD": "50",
            "CIRCUIT_BREAKER_THRESHOLD": "5", "CIRCUIT_BREAKER_COOLDOWN_S": "30",
            # A loaded CI machine can take >1 s to answer a burst through the local proxy; the
            # route would then rightly fail open, and the limiter tests would measure that.
            "REDIS_TIMEOUT_S": "10"}


@pytest.fixture
def stack(serve, monkeypatch):
    openai, anthropic = FakeOpenAI(), FakeAnthropic()
    for key, value in stack_env(openai, anthropic).items():
        monkeypatch.setenv(key, value)
    config.reload()
    built = GenerateStack(serve("api/generate.py") + "/api/generate", openai, anthropic, monkeypatch,
                          serve.wait_idle)
    yield built
    built.client.close()
    openai.close()
    anthropic.close()
