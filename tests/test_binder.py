"""Binder's configuration (binder/): a light CPU environment, not the root's environment.yml.

repo2docker, which builds Binder's images, reads a ``binder/`` folder in place of the
repository root when there is one. These tests read the files as repo2docker and pip
would: they do not build an image (that needs Docker).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPOSITORY = Path(__file__).resolve().parent.parent
BINDER = REPOSITORY / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Packages that exist only for CUDA (or that PyPI's CUDA builds of torch pull in).
CUDA_ONLY = ("nvidia-", "cupy", "pycuda", "triton")


def requirement_lines() -> list[str]:
    """binder/requirements.txt without comments and blank lines."""
    text = (BINDER / "requirements.txt").read_text(encoding="utf-8")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def package_requirements() -> dict[str, Requirement]:
    """name -> requirement, for the lines that are neither options nor the editable install."""
    requirements = (Requirement(line) for line in requirement_lines() if not line.startswith("-"))
    return {requirement.name.lower(): requirement for requirement in requirements}


def project_table() -> dict:
    """pyproject.toml's [project] table (tomllib is in the standard library from Python 3.11)."""
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def editable_installs() -> list[str]:
    return [line.removeprefix("-e").strip() for line in requirement_lines() if line.startswith("-e ")]


def test_binder_folder_is_the_only_configuration_folder_and_has_no_conda_file():
    assert BINDER.is_dir()
    assert not (REPOSITORY / ".binder").exists(), "repo2docker refuses both binder/ and .binder/"
    # An environment.yml here would make repo2docker use conda and ignore requirements.txt.
    assert not list(BINDER.glob("environment.y*ml"))


def test_binder_installs_torch_from_the_cpu_wheel_index():
    assert f"--extra-index-url {CPU_INDEX}" in requirement_lines()
    torch = package_requirements()["torch"]
    assert Version("2.1") in torch.specifier and Version("3.0") not in torch.specifier
    assert "+cu" not in str(torch.specifier)


def test_binder_installs_nothing_that_only_cuda_needs():
    lines = requirement_lines()
    assert not [line for line in lines if "/whl/cu" in line], "a CUDA wheel index"
    assert not [name for name in package_requirements() if name.startswith(CUDA_ONLY)]


def test_binder_installs_the_package_editable_with_the_book_extra_only():
    (install,) = editable_installs()
    path, _, extras = install.partition("[")
    assert path == ".", "the repository root, where repo2docker runs pip"
    assert extras == "book]", "the test, dev and site extras are not for readers"
    project = project_table()
    book = [Requirement(line).name.lower() for line in project["optional-dependencies"]["book"]]
    assert not [name for name in book if name.startswith(CUDA_ONLY) or name == "torch"]


def test_binder_python_matches_what_the_package_requires():
    runtime = (BINDER / "runtime.txt").read_text(encoding="utf-8").strip()
    name, version = runtime.split("-")
    assert (name, version) == ("python", "3.11")
    project = project_table()
    assert Version(version) in SpecifierSet(project["requires-python"])
