"""environment.yml (conda) must install what pyproject.toml and the Makefile install."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
ENV = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def _pip_lines() -> list[str]:
    for dep in ENV["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return dep["pip"]
    raise AssertionError("environment.yml has no pip section")


def _conda_python() -> Version:
    for dep in ENV["dependencies"]:
        if isinstance(dep, str) and dep.startswith("python"):
            return Version(dep.split("=")[-1])
    raise AssertionError("environment.yml pins no python")


def test_python_version_is_allowed_by_pyproject():
    allowed = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert _conda_python() in allowed


def test_torch_pin_matches_the_makefile_and_the_pyproject_range():
    pins = [Requirement(x) for x in _pip_lines() if x.startswith("torch")]
    assert len(pins) == 1
    make_pin = re.search(r"^TORCH\s*\?=\s*(\S+)", MAKEFILE, re.M).group(1)
    assert str(pins[0]) == make_pin
    core = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    version = Version(str(pins[0].specifier).lstrip("="))
    assert version in core["torch"].specifier


def test_project_installs_with_the_same_extras_as_the_makefile():
    editable = [x for x in _pip_lines() if x.startswith("-e")]
    assert len(editable) == 1
    env_extras = set(re.search(r"\[(.*)\]", editable[0]).group(1).split(","))
    make_extras = set(re.search(r'-e "?\.\[(.*?)\]', MAKEFILE).group(1).split(","))
    assert env_extras == make_extras
    assert env_extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_conda_adds_nothing_outside_pyproject():
    conda_only = [d for d in ENV["dependencies"] if isinstance(d, str)]
    assert sorted(re.split(r"[=<>]", d)[0] for d in conda_only) == ["pip", "python"]


def test_the_dev_extra_brings_tomli_where_tomllib_is_missing():
    # This file imports tomli on Python 3.10; the dev extra (installed by make and by conda's
    # `-e .[dev,...]` line) must bring it there, and only there.
    dev = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]
    tomli = [r for r in dev if r.name == "tomli"]
    assert len(tomli) == 1 and tomli[0].marker is not None
    assert tomli[0].marker.evaluate({"python_version": "3.10"})
    assert not tomli[0].marker.evaluate({"python_version": "3.11"})
    assert "dev" in re.search(r'-e "?\.\[(.*?)\]', MAKEFILE).group(1).split(",")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("index", ["", "https://download.pytorch.org/whl/cpu"])
def test_the_torch_index_reaches_pip_for_torch_only(index):
    # `make -n -B` prints the install recipe without running it.
    out = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), ".venv/.installed", f"TORCH_INDEX={index}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [
        line for line in out.splitlines() if "pip install" in line and "--upgrade" not in line
    ]
    assert len(installs) == 2, out
    torch_line, project_line = installs
    assert '"torch==' in torch_line and "-e " in project_line
    if index:
        assert f'--index-url "{index}"' in torch_line
    else:
        assert "--index-url" not in torch_line
    assert "--index-url" not in project_line


def test_the_ci_workflow_runs_make_test_with_pinned_actions():
    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text(encoding="utf-8"))
    assert flow["permissions"] == {"contents": "read"}
    (job,) = flow["jobs"].values()
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs == ["make test"]  # the workflow is the README's command, nothing else
    assert job["env"]["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    for step in job["steps"]:
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    pythons = [Version(v) for v in job["strategy"]["matrix"]["python"]]
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert all(v in requires for v in pythons) and _conda_python() in pythons
    assert min(pythons) == Version("3.10")
