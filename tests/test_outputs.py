"""Issue 16.1-3, 16.7: the farm delivers what F12 Render Animation writes, in the scene's format, under its names.

Each case is a real bpy 5.0.1 scene (32x18 Workbench, 2-3 frames) rendered twice: on the farm (the local cloud's
real state machine, Lambda, worker and stitch, downloaded by the real CLI) and locally with
``bpy.ops.render.render(animation=True)`` on the same file. The two sets of files must have the same names
(relative paths), the same format (headers, EXR parts and channels: every view layer and pass) and, for lossless
formats, the same pixels (decoded by bpy); JPEG keeps its quantisation tables (its quality). Settings are combined
per job to keep the local-cloud jobs few; the formats with nothing to name (JPEG, WebP, OpenEXR) run through the
real worker alone.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from render_contract import layout

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene, run_cli
from tests.reliability.support import bpy_edit
from tests.test_worker import make_plan, run_worker, upload_blend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "container"))
from render_worker import verify  # noqa: E402

FILE_OUTPUT_NODE = """
tree = bpy.data.node_groups.new('Compositing', 'CompositorNodeTree')
scene.compositing_node_group = tree
layers = tree.nodes.new('CompositorNodeRLayers')
node = tree.nodes.new('CompositorNodeOutputFile')
node.directory = {directory!r}
node.file_name = {file_name!r}
node.format.media_type = 'IMAGE'
node.format.file_format = {file_format!r}
node.file_output_items.new('RGBA', 'Image')
tree.links.new(layers.outputs['Image'], node.inputs['Image'])
"""
PNG16_WITH_NODE = """
scene.render.film_transparent = True
settings = scene.render.image_settings
settings.file_format = 'PNG'
settings.color_depth = '16'
settings.color_mode = 'RGBA'
scene.render.filepath = '//renders/shot010_####'
""" + FILE_OUTPUT_NODE.format(directory="//comp/", file_name="beauty/img_", file_format="PNG")
MULTILAYER_WITH_NODE = """
scene.render.filepath = '//renders/ml'
scene.view_layers.new('Second')
for layer in scene.view_layers:
    layer.use_pass_z = True
settings = scene.render.image_settings
settings.media_type = 'MULTI_LAYER_IMAGE'
settings.exr_codec = 'PIZ'
""" + FILE_OUTPUT_NODE.format(directory="//comp_exr", file_name="pass_##_", file_format="OPEN_EXR")
TIFF_FOLDER = """
settings = scene.render.image_settings
settings.file_format = 'TIFF'
settings.color_depth = '16'
settings.color_mode = 'RGB'
scene.render.filepath = '//renders/tiff/'
"""
COMPARE = """
import bpy, json, sys
import numpy as np
out = {}
for farm, local in json.loads(sys.argv[1]):
    a = bpy.data.images.load(farm, check_existing=False)
    b = bpy.data.images.load(local, check_existing=False)
    pa, pb = np.array(a.pixels[:]), np.array(b.pixels[:])
    diff = float(abs(pa - pb).max()) if pa.size == pb.size else -1.0
    out[farm] = {"size": [list(a.size), list(b.size)], "diff": diff, "pixels": int(pa.size)}
print("RESULT" + json.dumps(out))
"""


def scene_with(tmp_path: Path, name: str, code: str, frames: int = 3) -> Path:
    """The tiny scene with ``code`` applied, saved as ``<tmp>/<name>/<name>.blend``."""
    base = make_scene(
        tmp_path / "base" / f"{name}.blend",
        "--frame-end",
        str(frames),
        "--resolution",
        "32",
        "18",
        "--engine",
        "workbench",
    )
    (tmp_path / name).mkdir(parents=True, exist_ok=True)
    return bpy_edit(base, code, tmp_path / name / f"{name}.blend")


def render_locally(blend: Path, into: Path) -> Path:
    """F12 Render Animation on a copy of the file in ``into`` (relative output paths land beside it)."""
    into.mkdir(parents=True, exist_ok=True)
    copy = into / blend.name
    shutil.copy2(blend, copy)
    script = "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); bpy.ops.render.render(animation=True)"
    subprocess.run([sys.executable, "-c", script, str(copy)], check=True, capture_output=True, timeout=300)
    copy.unlink()
    return into


def files_under(folder: Path) -> dict[str, Path]:
    return {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}


def pixel_differences(pairs: list[tuple[Path, Path]]) -> dict[str, dict[str, object]]:
    """Decodes both files of each pair with bpy (its own process) and gives the largest channel difference."""
    argument = json.dumps([[str(a), str(b)] for a, b in pairs])
    result = subprocess.run(
        [sys.executable, "-c", COMPARE, argument], check=True, capture_output=True, text=True, timeout=300
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    return dict(json.loads(line[len("RESULT") :]))


def assert_same_pixels(pairs: list[tuple[Path, Path]], tolerance: float = 0.0) -> None:
    for farm, compared in pixel_differences(pairs).items():
        sizes = compared["size"]
        assert isinstance(sizes, list) and sizes[0] == sizes[1] == [32, 18], (farm, compared)
        assert compared["diff"] != -1.0 and float(str(compared["diff"])) <= tolerance, (farm, compared)


def png_header(path: Path) -> tuple[int, int]:
    """(bit depth, colour type) from the IHDR: 16 and 6 are 16-bit RGBA."""
    data = path.read_bytes()
    return data[24], data[25]


def exr_layout(path: Path) -> list[tuple[str, list[str]]]:
    """Each part's name and channel names (a multilayer EXR names every view layer and pass)."""
    data = path.read_bytes()
    version = int.from_bytes(data[4:8], "little")
    headers, _ = verify._exr_headers(data, bool(version & verify.EXR_MULTIPART), bool(version & verify.EXR_LONG_NAMES))
    parts = []
    for header in headers:
        name = header.get("name", ("", b""))[1].rstrip(b"\x00").decode()
        raw = header["channels"][1]
        channels, pos = [], 0
        while raw[pos] != 0:
            end = raw.index(b"\x00", pos)
            channels.append(raw[pos:end].decode())
            pos = end + 1 + 16
        parts.append((name, channels))
    return parts


def exr_attribute(path: Path, name: str) -> bytes:
    data = path.read_bytes()
    version = int.from_bytes(data[4:8], "little")
    headers, _ = verify._exr_headers(data, bool(version & verify.EXR_MULTIPART), bool(version & verify.EXR_LONG_NAMES))
    return headers[0][name][1]


def exr_pixel_data(path: Path) -> bytes:
    """Every chunk after the headers and offset tables: the pixels of every part, view layer and pass as the codec
    stored them. Two files with equal data hold equal pixels; their headers may differ (the render's date and
    the .blend's path are metadata)."""
    data = path.read_bytes()
    version = int.from_bytes(data[4:8], "little")
    multipart, tiled = bool(version & verify.EXR_MULTIPART), bool(version & verify.EXR_TILED)
    headers, pos = verify._exr_headers(data, multipart, bool(version & verify.EXR_LONG_NAMES))
    total = sum(verify._exr_chunk_count(header, tiled) or 0 for header in headers)
    return data[pos + 8 * total :]


def jpeg_tables(path: Path) -> list[bytes]:
    """The DQT segments: the same quality setting gives the same quantisation tables."""
    data, pos, tables = path.read_bytes(), 2, []
    while pos < len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] == 0xDB:
            tables.append(data[pos + 4 : pos + 2 + length])
        pos += 2 + length
    return tables


def submit_and_download(cloud: LocalCloudProcess, blend: Path, into: Path) -> tuple[str, str]:
    result = run_cli(cloud, "submit", str(blend), "--wait", "--download", str(into), "--with-frames")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0], result.stderr


def test_png16_rgba_and_a_file_output_node_come_back_as_f12_writes_them(
    local_cloud: LocalCloudProcess, tmp_path: Path
) -> None:
    blend = scene_with(tmp_path, "png16", PNG16_WITH_NODE)
    local = files_under(render_locally(blend, tmp_path / "local"))
    assert sorted(local) == [
        *(f"comp/beauty/img_Image{frame:04d}.png" for frame in (1, 2, 3)),
        *(f"renders/shot010_{frame:04d}.png" for frame in (1, 2, 3)),
    ]

    job_id, stderr = submit_and_download(local_cloud, blend, tmp_path / "dl")
    assert "will come back: frames: 3 x PNG 16-bit RGBA, named shot010_0001.png ... shot010_0003.png" in stderr
    assert "1 compositor File Output node(s) (File Output: //comp/beauty/img_): their files for each frame" in stderr
    farm = files_under(tmp_path / "dl" / job_id)
    expected = {name.removeprefix("renders/"): path for name, path in local.items()}
    assert sorted(farm) == sorted(expected), "frames named by the output path, node files by their own names"
    assert all(png_header(path) == (16, 6) for name, path in farm.items() if name.startswith("shot010"))
    assert png_header(farm["comp/beauty/img_Image0001.png"]) == png_header(local["comp/beauty/img_Image0001.png"])
    assert_same_pixels([(farm[name], expected[name]) for name in farm])

    keys = boto3_keys(local_cloud, job_id)
    assert {key.split("/", 2)[2] for key in keys if "/frames/" in key} == {f"frames/{f:06d}.png" for f in (1, 2, 3)}
    assert {key.split("/", 2)[2] for key in keys if "/outputs/" in key} == {
        f"outputs/comp/beauty/img_Image{f:04d}.png" for f in (1, 2, 3)
    }

    # The same job again, straight into the scene's output paths below a folder standing for the .blend's.
    into = tmp_path / "artist"
    again = run_cli(local_cloud, "download", job_id, str(into), "--into-output-path")
    assert again.returncode == 0, again.stderr
    written = files_under(into)
    assert sorted(name for name in written if not name.endswith(".mp4")) == sorted(local)
    assert_same_pixels([(written[name], local[name]) for name in local])


def test_multilayer_exr_with_two_view_layers_a_pass_and_an_exr_node(
    local_cloud: LocalCloudProcess, tmp_path: Path
) -> None:
    blend = scene_with(tmp_path, "ml", MULTILAYER_WITH_NODE, frames=2)
    local = files_under(render_locally(blend, tmp_path / "local"))
    assert sorted(local) == [
        "comp_exr/pass_01_Image.exr",
        "comp_exr/pass_02_Image.exr",
        "renders/ml0001.exr",
        "renders/ml0002.exr",
    ]

    job_id, stderr = submit_and_download(local_cloud, blend, tmp_path / "dl")
    assert "multilayer OpenEXR 32-bit float RGBA PIZ (every view layer and pass), named ml0001.exr" in stderr
    farm = files_under(tmp_path / "dl" / job_id)
    expected = {name.removeprefix("renders/"): path for name, path in local.items()}
    assert sorted(farm) == sorted(expected)
    for name, path in farm.items():
        assert verify.file_defect(path) is None
        assert exr_layout(path) == exr_layout(expected[name]), name  # every view layer and pass, in order
        assert exr_attribute(path, "compression") == exr_attribute(expected[name], "compression")
        assert exr_pixel_data(path) == exr_pixel_data(expected[name]), f"{name}: pixels of every layer and pass"
    channels = [channel for _part, names in exr_layout(farm["ml0001.exr"]) for channel in names]
    assert any("Second" in c for c in channels) and any("Depth" in c for c in channels), channels
    assert_same_pixels([(farm[name], expected[name]) for name in farm if name.startswith("comp_exr/")])
    assert (tmp_path / "dl" / "ml.mp4").stat().st_size > 0, "the stitch encodes the composites stored beside them"


def test_tiff_into_an_output_folder_path(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    """A trailing slash: the folder holds frames named by their number alone (``0001.tif``)."""
    blend = scene_with(tmp_path, "tiff", TIFF_FOLDER, frames=2)
    local = files_under(render_locally(blend, tmp_path / "local"))
    assert sorted(local) == ["renders/tiff/0001.tif", "renders/tiff/0002.tif"]
    result = run_cli(local_cloud, "submit", str(blend), "--wait", "--download-to-output-path")
    assert result.returncode == 0, result.stderr
    assert "will come back: frames: 2 x TIFF 16-bit RGB, named 0001.tif ... 0002.tif" in result.stderr
    written = files_under(blend.parent)
    assert {"renders/tiff/0001.tif", "renders/tiff/0002.tif", "renders/tiff/tiff.mp4"} <= set(written)
    assert_same_pixels([(written[name], local[name]) for name in local])


@pytest.mark.parametrize(
    ("name", "code", "extension"),
    [
        ("jpeg", "s = scene.render.image_settings; s.file_format = 'JPEG'; s.quality = 37", "jpg"),
        (
            "webp",
            "s = scene.render.image_settings; s.file_format = 'WEBP'; s.quality = 100; s.color_mode = 'RGBA'",
            "webp",
        ),
        (
            "exr",
            "s = scene.render.image_settings; s.file_format = 'OPEN_EXR'; s.color_depth = '16'; s.exr_codec = 'DWAA'",
            "exr",
        ),
    ],
)
def test_the_worker_keeps_the_scenes_still_settings(
    bucket: str, tmp_path: Path, name: str, code: str, extension: str
) -> None:
    """JPEG quality, lossless WebP and half-float DWAA EXR through the real worker, against F12's files."""
    blend = scene_with(tmp_path, name, code + "\nscene.render.filepath = '//renders/f_##'", frames=1)
    local = files_under(render_locally(blend, tmp_path / "local"))
    assert list(local) == [f"renders/f_01.{extension}"]
    reference = local[f"renders/f_01.{extension}"]
    file_format = {"jpg": "JPEG", "webp": "WEBP", "exr": "OPEN_EXR"}[extension]
    plan = make_plan(bucket, f"job-{name}", upload_blend(bucket, blend, f"uploads/{name}.blend"), frames=(1, 1, 1))
    plan = dataclasses.replace(plan, file_format=file_format, frame_extension=extension)
    boto3.client("s3").put_object(Bucket=bucket, Key=layout.plan_key(plan.job_id), Body=plan.to_json())
    result = run_worker("render", plan)
    assert result.returncode == 0, result.stderr
    farm = tmp_path / f"farm.{extension}"
    boto3.client("s3").download_file(bucket, layout.frame_key(plan.job_id, 1, extension), str(farm))
    assert verify.file_defect(farm) is None
    if extension == "jpg":
        assert jpeg_tables(farm) == jpeg_tables(reference) and jpeg_tables(farm), "quality 37 kept"
        assert_same_pixels([(farm, reference)], tolerance=0.0)
    elif extension == "exr":
        assert exr_layout(farm) == exr_layout(reference)
        assert exr_attribute(farm, "compression") == exr_attribute(reference, "compression") == bytes([8])  # DWAA
        assert exr_pixel_data(farm) == exr_pixel_data(reference)
        assert_same_pixels([(farm, reference)])
    else:
        assert farm.read_bytes()[12:16] == reference.read_bytes()[12:16]  # VP8L (lossless) or VP8X as F12 wrote
        assert_same_pixels([(farm, reference)])


def boto3_keys(cloud: LocalCloudProcess, job_id: str) -> list[str]:
    listing = cloud.client("s3").list_objects_v2(Bucket=cloud.bucket, Prefix=layout.job_prefix(job_id))
    return [item["Key"] for item in listing.get("Contents", [])]
