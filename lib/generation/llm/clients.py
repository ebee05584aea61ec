"""One SDK client per process and key, so warm invocations reuse its connection pool.

The SDK is imported here, on first use only: openai costs ~0.5-1.5 s to import and anthropic
~1-3 s, which requests that never reach a provider (or never fall back) must not pay.
`max_retries=0`: the SDKs' own backoff would spend the deadline the fallback needs.
"""

import importlib
import threading

_SDK_CLASSES = {"openai": "OpenAI", "anthropic": "Anthropic"}
_clients: dict[tuple, object] = {}
_lock = threading.Lock()


def client(sdk: str, api_key: str, base_url: str | None):
    key = (sdk, api_key, base_url)
    with _lock:
        if key not in _clients:
            module = importlib.import_module(sdk)
            _clients[key] = getattr(module, _SDK_CLASSES[sdk])(api_key=api_key, base_url=base_url,
                                                               max_retries=0)
        return _clients[key]
