"""bitsandbytes (QLoRA) is pinned once, installed only where it works, and named alike in all three files."""

import re
import tomllib

from packaging.requirements import Requirement

from phi3lab.paths import REPO_ROOT


def gpu_extra() -> Requirement:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (requirement,) = [Requirement(r) for r in project["optional-dependencies"]["gpu"]]
    assert "bitsandbytes" not in " ".join(project["dependencies"] + project["optional-dependencies"]["dev"])
    return requirement


def test_bitsandbytes_only_in_the_gpu_extra_and_only_on_linux_and_windows():
    requirement = gpu_extra()
    assert requirement.name == "bitsandbytes" and str(requirement.specifier).startswith("==")
    for platform, expected in (("linux", True), ("win32", True), ("darwin", False)):
        assert requirement.marker.evaluate({"sys_platform": platform}) is expected


def test_the_pin_agrees_in_pyproject_constraints_and_environment_yml():
    version = str(gpu_extra().specifier).removeprefix("==")
    constraints = (REPO_ROOT / "constraints.txt").read_text()
    assert re.search(rf"^bitsandbytes=={re.escape(version)}\b", constraints, re.M)
    assert f"bitsandbytes=={version}" in (REPO_ROOT / "environment.yml").read_text()
