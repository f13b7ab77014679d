"""Packing with blender-asset-tracer: every file the scene needs reaches the worker at the place its paths expect.

The scenes are made with real bpy in a subprocess: a main file with an image texture inside the project, an image
outside the project (absolute path: BAT moves it under ``_outside_project/`` and rewrites a COPY of the main file),
a UDIM set and an image sequence, and a linked library in ``libs/`` whose material uses ``//../textures/red.png``.
Workbench with flat lighting in texture colour mode renders each textured quad in exactly its texture's colour.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from render_on_aws.core import packing, preparing

from localcloud.process import LocalCloudProcess

SCENE_SCRIPT = r"""
import sys
from pathlib import Path
import bpy

root, outside = Path(sys.argv[1]), Path(sys.argv[2])
for folder in (root / "textures", root / "libs", root / "udim", root / "seq", outside, root.parent / "odd",
               root.parent / "addon-copy"):
    folder.mkdir(parents=True, exist_ok=True)

def png(path, rgba, size=8):
    image = bpy.data.images.new(path.stem, size, size, alpha=True)
    image.pixels[:] = list(rgba) * (size * size)
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)

def material(name, image):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    texture = mat.node_tree.nodes.new("ShaderNodeTexImage")
    texture.image = image
    mat.node_tree.links.new(texture.outputs["Color"], mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"])
    return mat

def quad(name, x, mat, size=1.2):
    mesh = bpy.data.meshes.new(name)
    s = size / 2
    mesh.from_pydata([(x - s, -s, 0), (x + s, -s, 0), (x + s, s, 0), (x - s, s, 0)], [], [(0, 1, 2, 3)])
    mesh.uv_layers.new()
    mesh.materials.append(mat)
    return bpy.data.objects.new(name, mesh)

# The library: a collection with a red quad; its texture path climbs out of libs/ (still inside the project).
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.wm.save_as_mainfile(filepath=str(root / "libs" / "lib.blend"))
png(root / "textures" / "red.png", (1.0, 0.0, 0.0, 1.0))
red = bpy.data.images.load("//../textures/red.png")
collection = bpy.data.collections.new("LibColl")
collection.objects.link(quad("LibQuad", 0.0, material("LibMat", red)))
bpy.context.scene.collection.children.link(collection)
bpy.ops.wm.save_as_mainfile(filepath=str(root / "libs" / "lib.blend"))

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
bpy.ops.wm.save_as_mainfile(filepath=str(root / "main.blend"))
png(root / "textures" / "green.png", (0.0, 1.0, 0.0, 1.0))
png(outside / "blue.png", (0.0, 0.0, 1.0, 1.0))
for tile in (1001, 1002):
    png(root / "udim" / f"tile.{tile}.png", (1.0, 1.0, 1.0, 1.0))
for frame in (1, 2, 3):
    png(root / "seq" / f"frame_{frame:04d}.png", (1.0, 1.0, 0.0, 1.0))

green = bpy.data.images.load("//textures/green.png")
scene.collection.objects.link(quad("GreenQuad", -1.4, material("GreenMat", green)))
blue = bpy.data.images.load(str(outside / "blue.png"))
scene.collection.objects.link(quad("BlueQuad", 1.4, material("BlueMat", blue)))
udim = bpy.data.images.load("//udim/tile.1001.png")
udim.source = "TILED"
udim.use_fake_user = True
sequence = bpy.data.images.load("//seq/frame_0001.png")
sequence.source = "SEQUENCE"
sequence.use_fake_user = True
with bpy.data.libraries.load(str(root / "libs" / "lib.blend"), link=True, relative=False) as (source, linked):
    linked.collections = ["LibColl"]
instance = bpy.data.objects.new("LibInstance", None)
instance.instance_type = "COLLECTION"
instance.instance_collection = linked.collections[0]
scene.collection.objects.link(instance)

camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
camera.data.type = "ORTHO"
camera.data.ortho_scale = 4.0
camera.location = (0, 0, 5)
scene.collection.objects.link(camera)
scene.camera = camera
scene.render.engine = "BLENDER_WORKBENCH"
scene.display.shading.light = "FLAT"
scene.display.shading.color_type = "TEXTURE"
scene.view_settings.view_transform = "Standard"
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 36, 100
scene.render.image_settings.file_format = "PNG"
scene.frame_start = scene.frame_end = 1
bpy.ops.wm.save_as_mainfile(filepath=str(root / "main.blend"), relative_remap=False)
blue.filepath = str(outside / "blue.png")  # absolute on purpose: BAT must move it and rewrite a copy
bpy.data.libraries[0].filepath = str(root / "libs" / "lib.blend")  # absolute, yet inside the project
bpy.ops.wm.save_as_mainfile(filepath=str(root / "main.blend"), relative_remap=False)
# What the add-on submits: a copy saved elsewhere, relative paths remapped to climb back to the project.
bpy.ops.wm.save_as_mainfile(filepath=str(root.parent / "addon-copy" / "main.blend"), copy=True, relative_remap=True)

# A file with paths no farm can honour: a Windows drive path, one climbing out to nowhere, a deleted library.
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.data.materials.new("Gone").use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=str(root.parent / "odd" / "gone.blend"))
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.wm.save_as_mainfile(filepath=str(root.parent / "odd" / "odd.blend"))
with bpy.data.libraries.load("//gone.blend", link=True) as (source, linked):
    linked.materials = ["Gone"]
holder = bpy.data.meshes.new("Holder")
holder.materials.append(linked.materials[0])
bpy.context.scene.collection.objects.link(bpy.data.objects.new("Holder", holder))
for name, path in (("windows", "C:\\textures\\wood.png"), ("nowhere", "//../../nowhere/../x.png")):
    image = bpy.data.images.new(name, 4, 4)
    image.source = "FILE"
    image.filepath = path
    image.use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=str(root.parent / "odd" / "odd.blend"), relative_remap=False)
(root.parent / "odd" / "gone.blend").unlink()
"""

EXPECTED_IN_PROJECT = {
    "main.blend",
    "libs/lib.blend",
    "textures/green.png",
    "textures/red.png",
    "udim/tile.1001.png",
    "udim/tile.1002.png",
    "seq/frame_0001.png",
    "seq/frame_0002.png",
    "seq/frame_0003.png",
}
COLOURS = {"green": (0, 255, 0), "red": (255, 0, 0), "blue": (0, 0, 255)}
REGIONS = {"green": (18, 9), "red": (18, 32), "blue": (18, 54)}
"""(row, column) of each quad's centre in the 64x36 frame (quads at x = -1.4, 0, 1.4; ortho width 4)."""
PINK = (255, 0, 255)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("artist")
    script = base / "make_project.py"
    script.write_text(SCENE_SCRIPT)
    subprocess.run(
        [sys.executable, str(script), str(base / "project"), str(base / "elsewhere")],
        check=True,
        capture_output=True,
        cwd=base,
    )
    (base / "project" / "main.blend1").unlink(missing_ok=True)  # Blender's backup of the intermediate save
    return base / "project"


@pytest.fixture(autouse=True)
def _own_hash_cache(own_hash_cache: Path) -> Path:
    return own_hash_cache


def tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: content hash and mtime (so a rewrite with equal bytes would show too)."""
    return {
        path.relative_to(folder).as_posix(): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def materialise(prepared: preparing.PreparedJob, root: Path) -> Path:
    """Lays the job tree out as the worker does (path -> bytes of the stored file)."""
    for rel, stored in prepared.files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stored.path, target)
    return root / prepared.main


def test_prepare_lays_out_every_dependency_and_leaves_the_artist_files_alone(project: Path, tmp_path: Path) -> None:
    before = tree_digest(project.parent)
    prepared = preparing.prepare(preparing.SubmitRequest(project / "main.blend"))
    try:
        files = set(prepared.files)
        assert files >= EXPECTED_IN_PROJECT
        outside = files - EXPECTED_IN_PROJECT
        assert len(outside) == 1
        (blue,) = outside
        assert blue.startswith(packing.OUTSIDE_PROJECT + "/") and blue.endswith("/elsewhere/blue.png")
        assert prepared.main == "main.blend" and not prepared.missing
        # Only the main file needed rewriting (for the absolute path); its copy lives in work_dir.
        assert prepared.work_dir is not None
        assert prepared.files["main.blend"].path.is_relative_to(prepared.work_dir)
        assert prepared.files["libs/lib.blend"].path == project / "libs" / "lib.blend"
        assert [p.name for p in prepared.work_dir.rglob("*") if p.is_file()] == ["main.blend"]
        for rel in files - {"main.blend"}:
            assert prepared.files[rel].sha256 == hashlib.sha256(prepared.files[rel].path.read_bytes()).hexdigest()

        # In the laid-out tree, BAT finds every dependency through the rewritten paths, and nothing points outside.
        tree = tmp_path / "farm"
        main = materialise(prepared, tree)
        relaid = preparing.prepare(preparing.SubmitRequest(main))
        try:
            assert not relaid.missing
            assert set(relaid.files) == files
            assert all(
                stored.path.is_relative_to(tree) for stored in relaid.files.values() if stored.path.name != "main.blend"
            )
        finally:
            relaid.cleanup()
    finally:
        prepared.cleanup()
    assert prepared.work_dir is None
    assert tree_digest(project.parent) == before, "the artist's files changed"


def test_the_addons_copy_in_another_folder_packs_the_same_files(project: Path, tmp_path: Path) -> None:
    """The add-on saves a copy elsewhere (``//../project/textures/...``): everything then lies outside the copy's
    folder and goes under ``_outside_project/``, still found from the rewritten main file."""
    original = preparing.prepare(preparing.SubmitRequest(project / "main.blend"))
    copy = preparing.prepare(preparing.SubmitRequest(project.parent / "addon-copy" / "main.blend"))
    try:
        assert not copy.missing
        assert all(rel == "main.blend" or rel.startswith(packing.OUTSIDE_PROJECT + "/") for rel in copy.files)
        digests = {stored.sha256 for rel, stored in copy.files.items() if rel != "main.blend"}
        assert digests == {stored.sha256 for rel, stored in original.files.items() if rel != "main.blend"}
        relaid = preparing.prepare(preparing.SubmitRequest(materialise(copy, tmp_path / "farm")))
        try:
            assert not relaid.missing and set(relaid.files) == set(copy.files)
        finally:
            relaid.cleanup()
    finally:
        original.cleanup()
        copy.cleanup()


def test_missing_files_are_reported_with_their_users(project: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(project, broken)
    (broken / "textures" / "green.png").unlink()
    prepared = preparing.prepare(preparing.SubmitRequest(broken / "main.blend"))
    try:
        missing = {Path(item.path).relative_to(broken).as_posix(): item.used_by for item in prepared.missing}
        assert missing == {"textures/green.png": "image 'green.png' in main.blend"}
        assert "textures/green.png" not in prepared.files and "udim/tile.1002.png" in prepared.files
    finally:
        prepared.cleanup()


def test_windows_climbing_and_deleted_library_paths_are_missing(project: Path) -> None:
    prepared = preparing.prepare(preparing.SubmitRequest(project.parent / "odd" / "odd.blend"))
    try:
        assert sorted(item.used_by for item in prepared.missing) == [
            "image 'nowhere' in odd.blend",
            "image 'windows' in odd.blend",
            "library 'gone.blend' in odd.blend",
        ]
        assert project.parent / "odd" / "gone.blend" in [Path(item.path) for item in prepared.missing]
        assert set(prepared.files) == {"odd.blend"}
    finally:
        prepared.cleanup()


def run_cli(cloud: LocalCloudProcess, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line against the local cloud, with this test's own hash cache."""
    env = {**cloud.client_environment(), "RENDER_ON_AWS_CACHE_DIR": str(cache)}
    return subprocess.run(cloud.cli_command(*args), capture_output=True, text=True, timeout=600, env=env)


def cas_keys(cloud: LocalCloudProcess) -> set[str]:
    paginator = cloud.client("s3").get_paginator("list_objects_v2")
    return {
        item["Key"]
        for page in paginator.paginate(Bucket=cloud.bucket, Prefix="cas/")
        for item in page.get("Contents", [])
    }


def frame_pixels(cloud: LocalCloudProcess, job_id: str, target: Path) -> np.ndarray:
    s3 = cloud.client("s3")
    (key,) = [
        item["Key"] for item in s3.list_objects_v2(Bucket=cloud.bucket, Prefix=f"jobs/{job_id}/frames/")["Contents"]
    ]
    assert key.endswith(".png")
    s3.download_file(cloud.bucket, key, str(target))
    with av.open(str(target)) as container:
        frame = next(container.decode(video=0))
    return frame.to_ndarray(format="rgb24")


@pytest.mark.slow
def test_textures_and_linked_library_render_on_the_farm(
    local_cloud: LocalCloudProcess, project: Path, tmp_path: Path, own_hash_cache: Path
) -> None:
    before = tree_digest(project.parent)
    result = run_cli(local_cloud, own_hash_cache, "submit", str(project / "main.blend"), "--wait")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split()[0]
    textured = frame_pixels(local_cloud, job_id, tmp_path / "textured.png")
    assert textured.shape == (36, 64, 3)
    for name, (row, column) in REGIONS.items():
        assert np.abs(textured[row, column].astype(int) - COLOURS[name]).max() <= 8, (name, textured[row, column])

    # The worker fetched every file of the manifest, UDIM tiles and sequence frames included.
    s3 = local_cloud.client("s3")
    manifest = json.loads(s3.get_object(Bucket=local_cloud.bucket, Key=f"jobs/{job_id}/manifest.json")["Body"].read())
    assert set(manifest["files"]) >= EXPECTED_IN_PROJECT and manifest["main"] == "main.blend"
    assert {f"cas/sha256/{digest}" for digest in manifest["files"].values()} <= cas_keys(local_cloud)
    assert (
        f"fetched {len(manifest['files'])} files of manifest s3://{local_cloud.bucket}/jobs/{job_id}/manifest.json"
        in (local_cloud.worker_logs())
    )

    # Without the green texture: the CLI stops before uploading anything ...
    broken = tmp_path / "broken"
    shutil.copytree(project, broken)
    (broken / "textures" / "green.png").unlink()
    stored = cas_keys(local_cloud)
    (broken / "textures" / "new.png").write_bytes(os.urandom(64))  # would be a new cas/ object, if it were uploaded
    refused = run_cli(local_cloud, own_hash_cache, "submit", str(broken / "main.blend"))
    assert refused.returncode != 0
    assert f"missing: {broken / 'textures' / 'green.png'} (used by image 'green.png' in main.blend)" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("MissingDependencies")
    assert cas_keys(local_cloud) == stored, "something was uploaded before the artist decided"

    # ... and with --allow-missing the cube renders pink where the texture was: the texture made the difference.
    result = run_cli(local_cloud, own_hash_cache, "submit", str(broken / "main.blend"), "--allow-missing", "--wait")
    assert result.returncode == 0, result.stderr
    untextured = frame_pixels(local_cloud, result.stdout.split()[0], tmp_path / "untextured.png")
    row, column = REGIONS["green"]
    assert np.abs(untextured[row, column].astype(int) - PINK).max() <= 8, untextured[row, column]
    assert np.abs(textured[row, column].astype(int) - untextured[row, column].astype(int)).max() >= 200
    row, column = REGIONS["red"]
    assert np.array_equal(textured[row, column], untextured[row, column]), "the library's texture is unaffected"

    assert tree_digest(project.parent) == before, "the artist's files changed"
