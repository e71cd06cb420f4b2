"""What the project declares it needs, what it really imports, and what the image installs.

A dependency stays only where it is imported; the image installs exactly the pinned file, and
that file pins every declared runtime dependency at a version the declaration allows.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PINNED = REPO / "requirements" / "image.txt"

# Import names of declared packages that are not installed in every test environment (fla-core
# is installed on GPU hosts and in the image only); installed ones are read from their metadata.
NOT_ALWAYS_INSTALLED = {"fla-core": {"fla"}}


def declared(section: str, key: str) -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return [Requirement(line) for line in config[section][key].strip().splitlines() if line.strip()]


def runtime_requirements() -> list[Requirement]:
    return declared("options", "install_requires") + declared("options.extras_require", "gpu")


def import_names(distribution: str) -> set[str]:
    name = canonicalize_name(distribution)
    if name in NOT_ALWAYS_INSTALLED:
        return NOT_ALWAYS_INSTALLED[name]
    names = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if name in map(canonicalize_name, dists)
    }
    assert names, f"{distribution} is declared but not installed here: cannot tell its import name"
    return {n for n in names if not n.startswith("_")} or names


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of every absolute import in the Python files under ``folder``."""
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in PINNED.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"{PINNED.name}: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(match.group(1))
        assert name not in out, f"{PINNED.name}: {name} pinned twice"
        out[name] = match.group(2)
    return out


def test_every_declared_dependency_is_imported():
    imported = imported_modules(REPO / "wyoming_lina")
    unused = [str(r) for r in runtime_requirements() if not import_names(r.name) & imported]
    assert not unused, f"declared in setup.cfg but never imported by wyoming_lina/: {unused}"


def test_the_image_pins_every_declared_dependency_at_an_allowed_version():
    pinned = pins()
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is declared in setup.cfg but not pinned in {PINNED.name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{PINNED.name} pins {name}=={pinned[name]}, outside setup.cfg's {requirement}"
        )


def test_the_image_is_the_environment_the_gpu_numbers_were_measured_in():
    """torch, Triton and fla-core as docs/benchmarks.md's header names them, and one torch
    version everywhere the docs name the image's or the GPU's torch."""
    pinned = pins()
    header = (REPO / "docs" / "benchmarks.md").read_text().split("\n## ", 1)[0]
    assert f"torch {pinned['torch']}" in header
    assert f"Triton {'.'.join(pinned['triton'].split('.')[:2])}" in header
    assert f"fla-core {pinned['fla-core']}" in header
    for doc in ("README.md", "docs/gpu.md", "docs/benchmarks.md", "Dockerfile"):
        text = (REPO / doc).read_text()
        named = set(re.findall(r"torch[ =]=?\s?(2\.\d+\.\d+)(?!\+cpu)", text))
        assert named <= {pinned["torch"]}, f"{doc} names torch {sorted(named)}, the image has {pinned['torch']}"


def test_the_dockerfile_installs_only_the_pinned_file_and_the_project_without_dependencies():
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = re.findall(r"pip install ([^\n&\\]+)", dockerfile)
    assert installs, "no pip install in the Dockerfile?"
    for command in installs:
        words = command.split()
        assert "-r" in words and "requirements/image.txt" in words or "--no-deps" in words, command
