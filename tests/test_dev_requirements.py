"""requirements.txt pins everything Vercel installs, transitive dependencies included, at the
versions the tests run against; it fails as soon as it drifts from requirements.in or .venv."""

import re
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from devtools import lock

pytestmark = pytest.mark.pure


def _lines() -> list[str]:
    return [line.strip() for line in lock.TARGET.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_every_line_is_an_exact_pin_and_no_index_is_written():
    text = lock.TARGET.read_text()
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^ ;]+( ; .+)?", line) for line in _lines()), _lines()
    assert "://" not in text and "--index" not in text and "--find-links" not in text


def test_every_pin_is_the_installed_version_and_every_dependency_is_pinned():
    pins = {Requirement(line).name.lower().replace("_", "-"): Requirement(line) for line in _lines()}
    env = {**default_environment(), "extra": ""}
    for name, requirement in pins.items():
        if requirement.marker and not requirement.marker.evaluate(env):
            continue
        assert metadata.version(name) == str(requirement.specifier).removeprefix("=="), name
        for dependency in metadata.requires(name) or []:
            needed = Requirement(dependency)
            if needed.marker and not needed.marker.evaluate(env):
                continue
            assert needed.name.lower().replace("_", "-") in pins, f"{name} needs {needed.name}, unpinned"


def test_requirements_txt_is_what_requirements_in_compiles_to():
    assert lock.TARGET.read_text() == lock.compile_requirements(), \
        "requirements.txt drifted from requirements.in or .venv: run `make lock`"


def test_the_functions_are_pinned_to_the_region_of_the_data():
    import json

    from devtools import vercel_config

    assert json.loads(vercel_config.VERCEL_JSON.read_text())["regions"] == [vercel_config.REGION]
    deploying = (lock.ROOT / "docs" / "deploying.md").read_text()
    assert f"`{vercel_config.REGION}`" in deploying and "us-east-1" in deploying
