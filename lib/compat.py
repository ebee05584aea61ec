"""Every use of a vendor's private API, in one place, each behind a check of the version it
was written against.

- upstash-redis builds its httpx client (`Redis._http._client`) with no timeout and parses a
  pipeline's reply without looking at the HTTP status; `bound_redis_client` fixes both.
- upstash-ratelimit's `SlidingWindow._limit` is the generator of the Redis commands one
  limit check sends; `limit_commands` hands it out so lib.generation.rate_limits can put
  several checks in one pipeline.

PINNED must equal requirements.txt; tests/test_compat.py fails when it or the installed
packages disagree. At run time a mismatch raises VendorVersionMismatch at the first use
(the packages' own `__version__`, which costs nothing; importlib.metadata would cost ~5 ms
of cold start), before the private API is touched.
"""

import sys

import httpx

PINNED = {"upstash-redis": "1.8.0", "upstash-ratelimit": "1.2.0"}
_MODULES = {"upstash-redis": "upstash_redis", "upstash-ratelimit": "upstash_ratelimit"}
_checked: set[str] = set()


class VendorVersionMismatch(RuntimeError):
    """An upgraded vendor package: re-check the private API it is used through, then PINNED."""


def check_version(package: str, installed: str) -> None:
    if installed != PINNED[package]:
        raise VendorVersionMismatch(
            f"{package} {installed} is installed but lib.compat was written against "
            f"{PINNED[package]}: re-check its private API use, then update PINNED")


def _require(package: str) -> None:
    if package not in _checked:
        __import__(_MODULES[package])
        check_version(package, sys.modules[_MODULES[package]].__version__)
        _checked.add(package)


def bound_redis_client(client, timeout_s: float) -> None:
    """Bound every request of an upstash_redis.Redis by `timeout_s` (a hung Redis would
    otherwise hang the function until maxDuration), and turn a non-2xx reply into
    UpstashError before the client parses it: a whole-request error (wrong token, bad
    pipeline) is one JSON object, which the pipeline parser would trip over."""
    _require("upstash-redis")
    http = client._http._client
    http.timeout = httpx.Timeout(timeout_s)
    http.event_hooks = {**http.event_hooks, "response": [_refuse_error_status]}


def _refuse_error_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    from upstash_redis.errors import UpstashError

    response.read()
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    raise UpstashError(error if isinstance(error, str) and error else
                       f"HTTP {response.status_code}")


def limit_commands(limiter, identifier: str):
    """The generator behind `limiter.limit(identifier)` (an upstash_ratelimit limiter): it
    yields (command, args) and takes each reply by `send`; it returns the limit's Response."""
    _require("upstash-ratelimit")
    return limiter._limit(identifier)
