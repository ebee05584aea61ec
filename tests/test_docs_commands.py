"""Every shell command of the README and docs/operations.md works as written against a local
stack, except the lines marked `# production-only`.

Each ```bash block runs as one bash script from the root of a scratch copy of the repository,
with .venv active, while `make dev`'s stack runs there (`--server python`: the functions served
in the dev process, on a free port that stands in for :3000). A command fails the test when it
exits non-zero, except `ops monitoring` (3 or 4: alerts are expected on a fresh stack) and
`ops health` in the maintenance block (1: maintenance is not healthy). Blocks that need shell
variables load .env themselves, as the docs say. The README's tour is also checked for what it
promises: local-dev answers, the upgrade applied, TEAM's quota, and the dashboard showing it.
"""

import re
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from devtools.services import ROOT
from tests.conftest import _with_dbname
from tests.support.dev_stack import DevStack, clean_env, processes_under, scratch_repo

pytestmark = pytest.mark.pure  # a stack of its own: its own database, Redis and .env
DOCS = ("README.md", "docs/operations.md")
ALLOWED_EXIT = {"ops monitoring": {0, 3, 4}, "ops health": {0, 1}}


def bash_blocks(path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each ```bash block, production-only lines dropped."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    start = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if current is None and line.strip() == "```bash":
            current, start = [], number + 1
        elif current is not None and line.strip() == "```":
            blocks.append((start, current))
            current = None
        elif current is not None and "# production-only" not in line:
            current.append(line)
    return blocks


def commands(lines: list[str]) -> list[str]:
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def script(lines: list[str], port: int) -> str:
    """The block as a bash script that runs every command, reports each failure, and exits with
    the number of failures."""
    out = ["source .venv/bin/activate", "__failed=0"]
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        line = line.replace("localhost:3000", f"localhost:{port}").replace("127.0.0.1:3000", f"127.0.0.1:{port}")
        allowed = next((codes for name, codes in ALLOWED_EXIT.items() if name in line), {0})
        cases = "|".join(str(code) for code in sorted(allowed))
        quoted = line.replace("'", "'\\''")
        out += [line, f"__rc=$?; case $__rc in {cases}) ;; *) echo 'FAILED (exit '$__rc'): {quoted}' >&2;"
                      " __failed=$((__failed+1));; esac"]
    out.append("exit $__failed")
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_server_url):
    root = scratch_repo(tmp_path_factory.mktemp("docs"))
    name = f"newcomer_docs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    running = DevStack(root, env=clean_env(DATABASE_URL=_with_dbname(postgres_server_url, name))).start()
    yield running
    running.stop()
    for line in processes_under(root):
        subprocess.run(["kill", "-9", line.split(":", 1)[0]], check=False)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_block(stack: DevStack, lines: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in stack.env.items() if k != "DATABASE_URL"}  # only what .env says
    return subprocess.run(["bash", "-c", script(lines, stack.port)], cwd=stack.root, text=True,
                          capture_output=True, timeout=180, env={**env, "NO_COLOR": "1"})


BLOCKS = [(doc, start, lines) for doc in DOCS for start, lines in bash_blocks(ROOT / doc)
          if commands(lines)]


def test_the_docs_have_bash_blocks_and_mark_production_lines():
    assert len(BLOCKS) >= 20
    text = (ROOT / "docs/operations.md").read_text()
    assert "# production-only" in text and "../shared" not in text


@pytest.mark.parametrize("doc,start,lines", BLOCKS, ids=[f"{d}:{s}" for d, s, _ in BLOCKS])
def test_every_command_works_as_written(stack, doc, start, lines):
    result = run_block(stack, lines)
    assert result.returncode == 0, f"{doc}:{start}\n{result.stderr[-3000:]}\n{result.stdout[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if "stripe-trigger customer.subscription.created --org org_tour" in "\n".join(lines):
        out = result.stdout
        assert '"model": "local-dev"' in out and '"limit": 50' in out  # step 2: TRIAL
        assert '200 {"received": true, "outcome": "applied"}' in out  # step 3
        assert '"limit": 1000' in out  # step 4: TEAM's quota
        assert re.search(r"TEAM\s+1\b", out) and "openai/local-dev" in out  # step 5



@pytest.mark.slow
def test_the_tour_under_the_real_vercel_dev(tmp_path, postgres_server_url):
    """The README's five-minute tour against `make dev` itself: `vercel dev`, every function
    built by the Vercel Python builder, on zero config."""
    lines = next(block for doc, _, block in BLOCKS if doc == "README.md" and "org_tour" in "\n".join(block))
    root = scratch_repo(tmp_path)
    name = f"newcomer_vercel_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    vercel = DevStack(root, env=clean_env(DATABASE_URL=_with_dbname(postgres_server_url, name)),
                      server="vercel")
    try:
        vercel.start(timeout=180)
        result = run_block(vercel, lines)
        out = result.stdout
        assert result.returncode == 0, result.stderr[-3000:] + out[-3000:]
        assert '"model": "local-dev"' in out and '"limit": 50' in out
        assert '200 {"received": true, "outcome": "applied"}' in out and '"limit": 1000' in out
        assert re.search(r"TEAM\s+1\b", out) and "openai/local-dev" in out
    finally:
        seconds = vercel.interrupt(timeout=30) if vercel.process else 0
        leftovers = processes_under(root)
        for line in leftovers:
            subprocess.run(["kill", "-9", line.split(":", 1)[0]], check=False)
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert seconds < 5 and leftovers == [], (seconds, leftovers)
    assert "Traceback" not in vercel.output()
