"""vercel.json is generated from devtools/vercel_config.py and must be up to date."""

import json

import pytest

from devtools import vercel_config

pytestmark = pytest.mark.pure


def test_vercel_json_is_what_the_generator_writes():
    assert vercel_config.main(["--check"]) == 0, "run: python -m devtools.vercel_config"


def test_every_function_gets_the_exclusions_and_its_own_max_duration():
    functions = json.loads(vercel_config.VERCEL_JSON.read_text())["functions"]
    assert {path: f["maxDuration"] for path, f in functions.items()} == vercel_config.MAX_DURATION_S
    assert {f["excludeFiles"] for f in functions.values()} == {"{" + ",".join(vercel_config.EXCLUDE_FILES) + "}"}
