"""What can be checked of the container without a Docker engine: the entry point's choices (run
here, with this checkout's wyoming-lina on PATH and a temporary folder as /data), that the
build context holds every file the Dockerfile copies, and the compose files' two networks.
(CI also runs hadolint and Debian's docker-compose on these files, and the image's pinned
Python environment: script/check-image.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def entrypoint(*args: str, data: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "WYOMING_LINA_DATA_DIR": str(data),  # as the image sets it
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, cwd=data.parent, timeout=120
    )


def test_options_alone_run_the_server(tmp_path):
    from wyoming_lina import __version__

    result = entrypoint("--version", data=tmp_path / "data")  # = wyoming-lina serve --version
    assert result.returncode == 0 and result.stdout.strip() == __version__, result.stderr
    result = entrypoint("--samples-per-chunk", "0", data=tmp_path / "data")  # a serve option, checked by serve
    assert result.returncode == 2 and "wyoming-lina serve: error: argument --samples-per-chunk" in result.stderr


def test_a_command_runs_that_command_in_the_images_data_dir(tmp_path):
    data = tmp_path / "data"
    result = entrypoint("voice", "list", data=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"no voices in {data / 'voices'}"


def test_anything_else_runs_as_given(tmp_path):
    result = entrypoint("python", "-c", "import os; print(os.environ['WYOMING_LINA_DATA_DIR'])", data=tmp_path / "data")
    assert result.returncode == 0 and result.stdout.strip() == str(tmp_path / "data")


# --- the build context --------------------------------------------------------------------------
def _pattern(pattern: str) -> re.Pattern:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent
    folders decides; ``!`` lets it in again."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            included = negated
    return included


def copied_sources() -> list[str]:
    sources = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_every_file_the_dockerfile_copies_is_in_the_build_context():
    sources = copied_sources()
    assert "requirements/image.txt" in sources and "docker/entrypoint.sh" in sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        files = [p for p in (REPO / source).rglob("*.py")] if (REPO / source).is_dir() else [REPO / source]
        for path in files:
            relative = path.relative_to(REPO).as_posix()
            if "__pycache__" not in relative:
                assert in_build_context(relative), f"{relative} is copied but .dockerignore leaves it out"


@pytest.mark.parametrize(
    "path",
    [
        "tests/test_container.py",
        ".git/config",
        ".venv/bin/python",
        "data/models/lina.safetensors",
        "wyoming_lina/__pycache__/x.pyc",
        "bench/full_size.py",
    ],
)
def test_the_build_context_leaves_out_the_rest(path):
    assert not in_build_context(path)


def test_the_image_runs_as_a_numeric_user_with_its_data_dir_and_a_compiler():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER \d+:\d+$", dockerfile, re.M)
    assert "WYOMING_LINA_DATA_DIR=/data" in dockerfile
    assert re.search(r"apt-get install [^\n]*\bgcc\b", dockerfile)  # Triton's launcher
    assert dockerfile.count("\nFROM ") == 1  # no build stage left unused
    healthcheck = re.search(r"HEALTHCHECK[^\n]*\\\n\s*CMD ([^\n]*)", dockerfile).group(1)
    assert not re.search(r":\d{2,5}", healthcheck)  # it follows the configured port
    for line in re.findall(r"^(?:ENTRYPOINT|CMD) .*$", dockerfile, re.M):
        assert "--uri" not in line and "--data-dir" not in line  # a mounted YAML may set both


# --- compose ------------------------------------------------------------------------------------
def test_compose_bridge_and_host_network_variants():
    bridge = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["wyoming-lina"]
    host = yaml.safe_load((REPO / "docker-compose.host.yml").read_text())["services"]["wyoming-lina"]
    assert bridge["ports"] == ["10200:10200"] and "network_mode" not in bridge
    assert host["network_mode"] == "host" and "ports" not in host  # older compose refuses both
    assert "--zeroconf" in host["command"]
    for service in (bridge, host):
        assert "./data:/data" in service["volumes"] and "healthcheck" not in service
        assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
