"""Python by consent (issue 15.3): a Python driver renders only when the job allows scripts, and the artist is told.

Without ``--allow-scripts`` the farm opens the file with auto-execution off, so a driver whose expression needs
full Python does not evaluate (Blender disables it) and the CLI names the driver; with it, the driver evaluates as
in the artist's trusted Blender (the cube is three times as wide) and no warning is printed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene, run_cli
from tests.reliability.support import bpy_edit, decode_image, last_line

pytestmark = pytest.mark.slow

PYTHON_DRIVER = """
cube = next(obj for obj in scene.objects if obj.name.endswith("-cube"))
driver = cube.driver_add("scale", 0).driver
driver.type = "SCRIPTED"
driver.expression = "(lambda: 3.0)()"
"""


def render_one_frame(cloud: LocalCloudProcess, blend: Path, out: Path, *flags: str) -> tuple[np.ndarray, str]:
    result = run_cli(cloud, "submit", str(blend), *flags, "--wait", "--download", str(out))
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split()[0]
    frames = run_cli(cloud, "download", job_id, str(out), "--with-frames")
    assert frames.returncode == 0, frames.stderr
    frame = next(Path(line) for line in frames.stdout.split() if line.endswith(".png"))
    return decode_image(frame.read_bytes(), out / "decoded.png"), result.stderr


def test_a_python_driver_runs_only_with_consent(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    scene = make_scene(
        tmp_path / "plain.blend", "--frame-end", "1", "--resolution", "64", "36", "--engine", "workbench"
    )
    driven = bpy_edit(scene, PYTHON_DRIVER, tmp_path / "driven.blend")

    without, warned = render_one_frame(local_cloud, driven, tmp_path / "without")
    assert "warning: PythonNotRun: 1 thing(s)" in warned and "(lambda: 3.0)()" in warned, warned
    allowed, quiet = render_one_frame(local_cloud, driven, tmp_path / "allowed", "--allow-scripts")
    assert "PythonNotRun" not in quiet
    difference = np.abs(allowed.astype(int) - without.astype(int)).mean()
    assert difference > 1.0, difference  # only with consent does the driver set the cube's width
    assert last_line(quiet).endswith(".mp4")
