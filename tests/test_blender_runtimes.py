"""Blender runtimes by series through the real pipeline (issue 15.1 and 15.5), with real bpy of each series.

A tiny Cycles scene (CPU, 4 samples, fixed seed, no denoising: noisy, so any change in Blender's sampling shows)
is saved by bpy 4.2 (its runtime's own Python), rendered by bpy 4.2 itself (the artist's F12), and submitted to
the local cloud with the real CLI. The farm's frames must be pixel-identical (the decoded pixels, byte for
byte) to 4.2's own; bpy 5.0 renders the same file differently (the figure is printed). With ``--blender 5.0``
the same file renders on 5.0, identical to 5.0's own render, with a notice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from render_contract.runtimes import RUNTIMES

from localcloud import runtimes as local_runtimes
from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene, run_cli

FRAMES = (1, 2)
SCENE = ("--frame-end", "2", "--resolution", "64", "36", "--engine", "cycles", "--samples", "4")
TINY = ("--frame-end", "2", "--resolution", "32", "18", "--engine", "workbench")
"""Two Workbench frames at 32x18: for what a file asks of the farm, not for how Blender renders it."""

RENDER = r"""
import sys, bpy
from pathlib import Path
blend, out = sys.argv[1], Path(sys.argv[2])
bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False, use_scripts=False)
scene = bpy.context.scene
scene.render.image_settings.file_format = "PNG"
for frame in (int(f) for f in sys.argv[3:]):
    scene.frame_set(frame)
    scene.render.filepath = str(out / f"{frame:06d}")
    bpy.ops.render.render(write_still=True)
print("VERSION", bpy.app.version_string)
"""


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """(width, height, raw 8-bit pixel bytes) of a non-interlaced 8-bit PNG: the pixels, not the file's bytes
    (compression settings may differ between Blenders while the image is the same). Standard library only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        offset += 12 + length
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, color, interlace = header[8], header[9], header[12]
    assert depth == 8 and interlace == 0, (depth, interlace)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    stride = width * channels
    raw, rows, previous = zlib.decompress(idat), [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + predictor) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, b"".join(rows)


def mean_difference(a: Path, b: Path) -> float:
    """Mean absolute difference of two PNGs' pixels, 0..1."""
    (wa, ha, pa), (wb, hb, pb) = png_pixels(a), png_pixels(b)
    assert (wa, ha, len(pa)) == (wb, hb, len(pb))
    return sum(abs(x - y) for x, y in zip(pa, pb, strict=True)) / len(pa) / 255


def own_render(python: Path, blend: Path, out: Path) -> dict[int, Path]:
    """The file rendered by ``python``'s bpy itself (what F12 gives in that Blender)."""
    out.mkdir(parents=True)
    done = subprocess.run(
        [str(python), "-c", RENDER, str(blend), str(out), *map(str, FRAMES)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {frame: out / f"{frame:06d}.png" for frame in FRAMES}


def farm_render(cloud: LocalCloudProcess, blend: Path, out: Path, *options: str) -> tuple[dict[int, Path], str]:
    """The file through the local cloud with the real CLI; its frames, and what the CLI said (stderr)."""
    submitted = run_cli(cloud, "submit", str(blend), "--wait", *options)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    downloaded = run_cli(cloud, "download", job_id, str(out), "--with-frames")
    assert downloaded.returncode == 0, downloaded.stderr
    frames = {int(Path(line).stem): Path(line) for line in downloaded.stdout.split() if line.endswith(".png")}
    status = run_cli(cloud, "status", job_id)
    assert status.returncode == 0, status.stderr
    return frames, submitted.stderr + status.stderr


@pytest.fixture(scope="module")
def python42() -> Path:
    return local_runtimes.python_for("4.2")


@pytest.fixture(scope="module")
def saved_by_42(python42: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    blend = make_scene(tmp_path_factory.mktemp("v42") / "saved_by_42.blend", *SCENE, python=python42)
    assert blend.read_bytes()[:12] == b"BLENDER-v402"
    return blend


def test_a_42_file_renders_on_the_farm_exactly_as_blender_42_renders_it(
    local_cloud: LocalCloudProcess, saved_by_42: Path, python42: Path, tmp_path: Path
) -> None:
    reference = own_render(python42, saved_by_42, tmp_path / "blender-4.2")
    newest = own_render(Path(sys.executable), saved_by_42, tmp_path / "blender-5.0")
    farm, said = farm_render(local_cloud, saved_by_42, tmp_path / "farm")
    assert sorted(farm) == list(FRAMES)
    assert f"rendered with Blender {RUNTIMES['4.2']}" in said and "warning: OtherBlenderRuntime" not in said, said
    figures = {frame: mean_difference(newest[frame], reference[frame]) for frame in FRAMES}
    print(json.dumps({"mean_pixel_difference_5.0_vs_4.2": figures}))
    for frame in FRAMES:
        assert png_pixels(farm[frame]) == png_pixels(reference[frame]), f"frame {frame} differs from Blender 4.2's"
    assert any(figures.values()), "bpy 5.0 rendered the 4.2 file identically: the test could not tell them apart"


def test_an_override_renders_on_the_series_asked_for_with_a_notice(
    local_cloud: LocalCloudProcess, saved_by_42: Path, tmp_path: Path
) -> None:
    newest = own_render(Path(sys.executable), saved_by_42, tmp_path / "blender-5.0")
    farm, said = farm_render(local_cloud, saved_by_42, tmp_path / "farm", "--blender", "5.0")
    assert f"rendered with Blender {RUNTIMES['5.0']}" in said, said
    assert "warning: OtherBlenderRuntime: rendering with Blender 5.0.1 as asked" in said, said
    for frame in FRAMES:
        assert png_pixels(farm[frame]) == png_pixels(newest[frame]), f"frame {frame} differs from Blender 5.0's"


def test_an_unknown_override_is_refused_before_any_upload(local_cloud: LocalCloudProcess, saved_by_42: Path) -> None:
    refused = run_cli(local_cloud, "submit", str(saved_by_42), "--blender", "3.6")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("UnknownRuntime: the farm has no Blender 3.6 runtime")
    assert "submitted job" not in refused.stderr


def test_a_file_newer_than_every_runtime_fails_by_name_before_any_batch_job(
    local_cloud: LocalCloudProcess, saved_by_42: Path, tmp_path: Path
) -> None:
    data = saved_by_42.read_bytes()
    future = tmp_path / "future.blend"
    future.write_bytes(data[:9] + b"601" + data[12:])  # a Blender 6.1 header on the same file
    before = batch_jobs(local_cloud)
    failed = run_cli(local_cloud, "submit", str(future), "--wait")
    assert failed.returncode != 0
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("BlenderTooNew: ") and "Blender 6.1, newer than every runtime" in last, failed.stderr
    assert batch_jobs(local_cloud) == before, "a Batch job was submitted"


def batch_jobs(cloud: LocalCloudProcess) -> set[str]:
    """The ids of every Batch job the local cloud's queue has seen."""
    batch, queue = cloud.client("batch"), cloud.outputs["JobQueueArn"]
    statuses = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
    return {
        job["jobId"]
        for status in statuses
        for job in batch.list_jobs(jobQueue=queue, jobStatus=status)["jobSummaryList"]
    }


def test_the_stitch_opens_a_42_file_with_blender_42(
    local_cloud: LocalCloudProcess, python42: Path, tmp_path: Path
) -> None:
    """An EXR job's stitch opens the .blend (the scene's colour management makes the preview video display-referred):
    with the plan's Blender, as the render did, so a 4.2 file's video is made by 4.2's colour management too."""
    blend = make_scene(tmp_path / "exr_by_42.blend", *TINY, "--file-format", "OPEN_EXR", python=python42)
    submitted = run_cli(local_cloud, "submit", str(blend), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    stitch_logs = [
        path.read_text()
        for path in local_cloud.state_dir.glob("batch/*/attempt-*.log")
        if job_id in path.read_text() and "render-worker stitch" in path.read_text()
    ]
    assert stitch_logs, "no stitch attempt logged for the job"
    assert any("re-executing under the Blender 4.2 runtime" in text for text in stitch_logs), stitch_logs[-1][-2000:]
    assert "stitch done" in stitch_logs[-1]


FILE_OUTPUT_42 = r"""
import bpy, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
scene.render.filepath = "//renders/shot_##"
scene.use_nodes = True
tree = scene.node_tree
layers = next(node for node in tree.nodes if node.type == "R_LAYERS")
node = tree.nodes.new("CompositorNodeOutputFile")
node.base_path = "//comp/"
node.format.file_format = "PNG"
node.file_slots[0].path = "beauty/img_"
tree.links.new(layers.outputs["Image"], node.inputs[0])
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])
"""
ANIMATION = "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); bpy.ops.render.render(animation=True)"


def test_a_42_file_output_node_comes_back_named_as_blender_42_writes_it(
    local_cloud: LocalCloudProcess, python42: Path, tmp_path: Path
) -> None:
    """Blender 4.x keeps the compositor in ``scene.node_tree`` and a File Output node's folder in ``base_path``
    (5.0: ``compositing_node_group``, ``directory``): the frame counter and the worker read both. The farm's files
    for a 4.2 file, rendered on 4.2, have the names and pixels of 4.2's own Render Animation."""
    base = make_scene(tmp_path / "base.blend", *TINY, python=python42)
    blend = tmp_path / "project" / "nodes42.blend"
    blend.parent.mkdir()
    edited = subprocess.run(
        [str(python42), "-c", FILE_OUTPUT_42, str(base), str(blend)], capture_output=True, text=True, timeout=300
    )
    assert edited.returncode == 0, edited.stderr[-2000:]

    local = tmp_path / "local"
    local.mkdir()
    (local / blend.name).write_bytes(blend.read_bytes())
    rendered = subprocess.run(
        [str(python42), "-c", ANIMATION, str(local / blend.name)], capture_output=True, text=True, timeout=300
    )
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    (local / blend.name).unlink()
    expected = sorted(path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file())
    assert "renders/shot_01.png" in expected and "comp/beauty/img_0001.png" in expected, expected

    submitted = run_cli(local_cloud, "submit", str(blend), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    assert "1 compositor File Output node(s)" in submitted.stderr, submitted.stderr
    job_id = submitted.stdout.split()[0]
    out = tmp_path / "farm"
    downloaded = run_cli(local_cloud, "download", job_id, str(out), "--with-frames")
    assert downloaded.returncode == 0, downloaded.stderr
    farm = out / job_id
    got = sorted(path.relative_to(farm).as_posix() for path in farm.rglob("*") if path.is_file())
    # Frames land in the job's folder by their output-path names (the add-on's job folder is inside the scene's
    # output folder), node files at their paths relative to the .blend's folder.
    assert got == sorted(name.removeprefix("renders/") for name in expected), "named as 4.2's Render Animation"
    for name in expected:
        assert png_pixels(farm / name.removeprefix("renders/")) == png_pixels(local / name), name
