"""Fill a folder with the distributions `vercel build` needs offline (UV_OFFLINE=1 +
UV_FIND_LINKS=<folder>).

The CLI runs a universal `uv lock`, which must see every requirement of every platform
(tzdata on Windows, httpx2-jsfetch on emscripten, ...), while pip download only follows the
markers of this machine. So: resolve universally with uv, then fetch each pin on its own.

    python -m devtools.wheels .data/wheels
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_LINUX = ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
          "--platform", "manylinux_2_28_x86_64", "--python-version", "3.12", "--only-binary=:all:"]


def pins() -> list[str]:
    uv = Path(sys.executable).with_name("uv")
    out = subprocess.run([str(uv), "pip", "compile", "--universal", "--python-version", "3.12",
                          "--no-header", "--no-annotate", "--quiet", str(ROOT / "requirements.txt")],
                         capture_output=True, text=True, check=True).stdout
    return [line.split(";")[0].strip() for line in out.splitlines() if "==" in line] + [
        "pip", _pinned("vercel-runtime")]  # the CLI bundles the runtime into every function


def _pinned(name: str) -> str:
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        if line.startswith(name + "=="):
            return line.strip()
    raise LookupError(f"{name} is not pinned in requirements-dev.txt")


def fill(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--no-deps", "-d", str(folder)]
    for pin in pins():
        if subprocess.run([*pip, *_LINUX, pin], capture_output=True).returncode != 0:
            subprocess.run([*pip, pin], capture_output=True, check=True)  # any form, for metadata


if __name__ == "__main__":
    fill(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".data" / "wheels")
