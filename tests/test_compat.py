"""lib.compat: the vendor private APIs are used only at the versions they were checked for."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from lib import compat

ROOT = Path(__file__).resolve().parent.parent


def _requirements_pins() -> dict[str, str]:
    text = (ROOT / "requirements.txt").read_text()
    return {name.lower(): pin for name, pin in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


@pytest.mark.parametrize("package", sorted(compat.PINNED))
def test_pinned_version_is_the_installed_and_required_one(package):
    # Breaks on an upgrade: re-check lib.compat's private API use, then update PINNED.
    assert version(package) == compat.PINNED[package], \
        f"{package} is {version(package)}; lib.compat was checked against {compat.PINNED[package]}"
    assert _requirements_pins()[package] == compat.PINNED[package]


@pytest.mark.parametrize("package", sorted(compat.PINNED))
def test_the_runtime_guard_reads_the_same_version_as_the_metadata(package):
    module = __import__(package.replace("-", "_"))
    assert module.__version__ == version(package)
    compat.check_version(package, module.__version__)  # the guard lets the pinned one pass


def test_the_runtime_guard_refuses_another_version():
    with pytest.raises(compat.VendorVersionMismatch, match="upstash-redis 9.9.9"):
        compat.check_version("upstash-redis", "9.9.9")


def test_private_attributes_still_exist():
    from upstash_ratelimit import SlidingWindow
    from upstash_redis import Redis

    client = Redis("http://127.0.0.1:9", "token", rest_retries=0, allow_telemetry=False)
    compat.bound_redis_client(client, 1.5)
    assert client._http._client.timeout.read == 1.5
    commands = compat.limit_commands(SlidingWindow(max_requests=1, window=1, unit="s"), "k")
    command, args = next(commands)
    assert command == "eval" and args
