"""The worker image (container/Dockerfile) builds and works: built with podman on this machine, it answers
`render-worker --help` and renders a Cycles frame inside itself as its user (scripts/worker_image_local.sh).

Runs where podman is installed (`apt-get install podman debootstrap`) and is skipped, saying so, where it is not.
The first run builds a stand-in base and the image (about 2 minutes, 0.9 GB of downloads); later runs reuse
podman's layer cache and redo only the layers after a change to container/ or contract/.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from render_contract.runtimes import RUNTIMES

from tests.conftest import ROOT

MISSING_TOOL = re.compile(r"^worker-image-local: no \S+ command \(apt-get install \S+\)$", re.MULTILINE)
"""What scripts/worker_image_local.sh says (exit 3) when a command it needs is not installed."""

pytestmark = pytest.mark.skipif(
    shutil.which("podman") is None, reason="no podman here: the worker image is not built (apt-get install podman)"
)


def test_worker_image_builds_answers_help_and_renders_a_frame() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "worker-image-local"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    missing = MISSING_TOOL.search(output)
    if result.returncode != 0 and missing:  # podman without debootstrap and no reachable registry, say
        pytest.skip(missing.group(0))
    assert result.returncode == 0, output[-4000:]
    assert "checked: render-worker --help" in output
    rendered = re.search(r"^rendered \S+frame\.png (\d+) bytes as uid 1000 with Blender (\S+)", output, re.MULTILINE)
    assert rendered, output[-4000:]
    assert int(rendered.group(1)) > 0
    size = re.search(r"OK: render-on-aws-worker:local is (\d+) MB", output)
    assert size and 500 < int(size.group(1)) < 1500 * len(RUNTIMES), "about 1-1.9 GB a Blender runtime, no more"
