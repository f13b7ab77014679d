"""Unbaked simulations are named before the upload (issue 15.4): a warning in the CLI and the panel, never a stop.

Chunks start mid-shot in a fresh Blender, so an unbaked cloth, particle system, soft body, dynamic paint surface,
rigid body world, fluid domain or Geometry Nodes simulation zone renders wrong and nobody would be told. The scenes
are made by real bpy 5.0.1 and baked by it (point caches with ``ptcache.bake_all``, simulation zones with
``object.simulation_nodes_cache_bake``: one packed into the .blend, one on disk inside a node group). Mantaflow
cannot bake in bpy 5.0.1 as a module (its solver aborts the process), so fluid is checked unbaked only. The old files
in tests/data/blendfiles (2.79 to 3.1) must never make the check fail.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from blender_asset_tracer import blendfile
from render_on_aws.core import preparing, simulations

from localcloud.process import LocalCloudProcess
from tests.conftest import BLENDFILES, run_cli
from tests.test_addon import run_blender

SCENE_SCRIPT = r"""
import sys
from pathlib import Path
import bpy

folder, variant = Path(sys.argv[1]), sys.argv[2]
folder.mkdir(parents=True, exist_ok=True)
blend = folder / "shot.blend"
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 1, 4
scene.render.engine = "BLENDER_WORKBENCH"
scene.render.resolution_x, scene.render.resolution_y = 64, 36
bpy.ops.wm.save_as_mainfile(filepath=str(blend))  # first: disk caches are named after the file

def mesh(name, kind="plane", location=(0, 0, 0)):
    add = bpy.ops.mesh.primitive_plane_add if kind == "plane" else bpy.ops.mesh.primitive_cube_add
    add(size=0.5, location=location)
    ob = bpy.context.active_object
    ob.name = name
    return ob

def frames(cache):
    cache.frame_start, cache.frame_end = 1, 4

def simulation_tree(name):
    tree = bpy.data.node_groups.new(name, "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    return tree, tree.nodes.new("NodeGroupInput"), tree.nodes.new("NodeGroupOutput")

def sim_zone_modifier(ob, nested):
    inner, group_in, group_out = simulation_tree(ob.name + "Zone")
    start, end = inner.nodes.new("GeometryNodeSimulationInput"), inner.nodes.new("GeometryNodeSimulationOutput")
    start.pair_with_output(end)
    inner.links.new(group_in.outputs[0], start.inputs[0])
    inner.links.new(start.outputs[1], end.inputs[1])
    inner.links.new(end.outputs[0], group_out.inputs[0])
    inner.nodes.new("GeometryNodeBake")  # a Bake node is no simulation: never reported
    tree = inner
    if nested:
        tree, group_in, group_out = simulation_tree(ob.name + "Outer")
        group = tree.nodes.new("GeometryNodeGroup")
        group.node_tree = inner
        tree.links.new(group_in.outputs[0], group.inputs[0])
        tree.links.new(group.outputs[0], group_out.inputs[0])
    modifier = ob.modifiers.new("GeometryNodes", "NODES")
    modifier.node_group = tree
    bpy.context.view_layer.update()
    for bake in modifier.bakes:
        bake.use_custom_simulation_frame_range = True
        bake.frame_start, bake.frame_end = 1, 4
    return modifier

bpy.ops.object.camera_add(location=(0, -6, 3), rotation=(1.1, 0, 0))
scene.camera = bpy.context.active_object
frames(mesh("ClothPlane", location=(0, 0, 1)).modifiers.new("Cloth", "CLOTH").point_cache)
off = mesh("OffCloth", location=(-2, 0, 1)).modifiers.new("Cloth", "CLOTH")
off.show_render = False  # not rendered: not reported
emitter = mesh("Emitter", location=(2, 0, 0))
emitter.modifiers.new("Particles", "PARTICLE_SYSTEM")
emitter.particle_systems[0].settings.count = 10
emitter.particle_systems[0].settings.frame_end = 3
frames(emitter.particle_systems[0].point_cache)
hair = mesh("Hairy", location=(4, 0, 0))  # static hair (no dynamics) is no simulation
hair.modifiers.new("Hair", "PARTICLE_SYSTEM")
hair.particle_systems[0].settings.type = "HAIR"
hair.particle_systems[0].settings.count = 5
mesh("Falling", "cube", location=(0, 2, 2))
bpy.ops.rigidbody.object_add()
frames(scene.rigidbody_world.point_cache)
frames(mesh("Jelly", "cube", location=(2, 2, 1)).modifiers.new("Softbody", "SOFT_BODY").point_cache)
canvas = mesh("Canvas", location=(4, 2, 0))
canvas.modifiers.new("DynamicPaint", "DYNAMIC_PAINT")
bpy.context.view_layer.objects.active = canvas
bpy.ops.dpaint.type_toggle(type="CANVAS")
surface = canvas.modifiers["DynamicPaint"].canvas_settings.canvas_surfaces[0]
surface.surface_format = "VERTEX"
frames(surface.point_cache)
packed = sim_zone_modifier(mesh("SimPacked", location=(2, 4, 0)), nested=False)
packed.bake_target = "PACKED"
disk = sim_zone_modifier(mesh("SimDisk", location=(4, 4, 0)), nested=True)
disk.bake_target, disk.bake_directory = "DISK", "//simbake"
# Another scene's cloth is not rendered by this job: not reported.
other = bpy.data.scenes.new("Other")
other.collection.objects.link(mesh("ElsewhereCloth"))
bpy.data.objects["ElsewhereCloth"].modifiers.new("Cloth", "CLOTH")
scene.collection.objects.unlink(bpy.data.objects["ElsewhereCloth"])
bpy.ops.wm.save_as_mainfile(filepath=str(blend))

if variant == "baked":
    with bpy.context.temp_override(scene=scene):
        assert bpy.ops.ptcache.bake_all(bake=True) == {"FINISHED"}
    for ob in scene.objects:
        ob.select_set(ob.name in ("SimPacked", "SimDisk"))
    bpy.context.view_layer.objects.active = bpy.data.objects["SimPacked"]
    assert bpy.ops.object.simulation_nodes_cache_bake(selected=True) == {"FINISHED"}
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
"""

FLUID_SCRIPT = r"""
import sys
from pathlib import Path
import bpy

folder, cache_type = Path(sys.argv[1]), sys.argv[2]
folder.mkdir(parents=True, exist_ok=True)
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, 3
bpy.ops.mesh.primitive_cube_add(size=2)
domain = bpy.context.active_object
domain.name = "Domain"
fluid = domain.modifiers.new("Fluid", "FLUID")
fluid.fluid_type = "DOMAIN"
settings = fluid.domain_settings
settings.resolution_max = 6
settings.cache_frame_start, settings.cache_frame_end = 1, 3
settings.cache_type = cache_type
bpy.ops.wm.save_as_mainfile(filepath=str(folder / f"fluid_{cache_type.lower()}.blend"))
"""

UNBAKED = [
    "rigid body world of scene 'Scene' (frames 1-4)",
    "dynamic paint surface 'Surface' on object 'Canvas' (frames 1-4)",
    "cloth 'Cloth' on object 'ClothPlane' (frames 1-4)",
    "particle system 'Particles' on object 'Emitter' (frames 1-4)",
    "soft body 'Softbody' on object 'Jelly' (frames 1-4)",
    "simulation zone in modifier 'GeometryNodes' on object 'SimDisk' (frames 1-4)",
    "simulation zone in modifier 'GeometryNodes' on object 'SimPacked' (frames 1-4)",
]


def make(folder: Path, variant: str) -> Path:
    script = folder.parent / f"make_{variant}.py"
    script.write_text(SCENE_SCRIPT)
    subprocess.run(
        [sys.executable, str(script), str(folder), variant], check=True, capture_output=True, cwd=folder.parent
    )
    for backup in folder.glob("*.blend1"):
        backup.unlink()
    return folder / "shot.blend"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("simulations")
    return {variant: make(base / variant, variant) for variant in ("unbaked", "baked")}


@pytest.fixture(autouse=True)
def _own_hash_cache(own_hash_cache: Path) -> Path:
    return own_hash_cache


def unbaked(blend: Path, **options: int | str) -> list[str]:
    prepared = preparing.prepare(preparing.SubmitRequest(blend, **options))  # type: ignore[arg-type]
    try:
        assert prepared.missing == []  # a cache folder an unbaked simulation has not written yet is not missing
        return prepared.unbaked
    finally:
        prepared.cleanup()


def test_each_unbaked_simulation_is_named(scenes: dict[str, Path]) -> None:
    assert unbaked(scenes["unbaked"]) == UNBAKED


def test_baked_simulations_are_silent_and_their_disk_bake_is_uploaded(scenes: dict[str, Path]) -> None:
    prepared = preparing.prepare(preparing.SubmitRequest(scenes["baked"]))
    try:
        assert prepared.unbaked == []
        assert prepared.missing == []
        # The simulation zone baked to disk (inside a node group) travels with the job: it is what makes it baked.
        assert any(path.startswith("simbake/") and "/meta/" in path for path in prepared.files), prepared.files
    finally:
        prepared.cleanup()


def test_a_disk_bake_whose_files_are_gone_is_unbaked(scenes: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "shot.blend").write_bytes(scenes["baked"].read_bytes())
    prepared = preparing.prepare(preparing.SubmitRequest(copy / "shot.blend"))
    try:
        # A simulation zone's bake has no "baked" flag: without its folder it is simply not baked.
        assert prepared.unbaked == ["simulation zone in modifier 'GeometryNodes' on object 'SimDisk' (frames 1-4)"]
        # A point cache flagged as baked to disk whose files are gone is a missing file (the artist decides).
        assert [Path(item.path).name for item in prepared.missing] == ["43616E766173_*.bphys"]  # hex of 'Canvas'
    finally:
        prepared.cleanup()


COPY_SCRIPT = r"""
import sys
import bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2], copy=True, relative_remap=True, check_existing=False)
"""


def test_the_addons_copy_finds_the_disk_bakes_next_to_the_artists_file(scenes: dict[str, Path], tmp_path: Path) -> None:
    """The add-on uploads a copy saved to a temporary folder (as operators.save_copy does). Blender's relative_remap
    does not move a disk point cache (``//blendcache_<file>/``, implicit) or a bake folder (``//simbake`` stays): both
    are taken from beside the artist's file, at the same place in the tree."""
    copy = tmp_path / "render_on_aws_submit" / "shot.blend"
    copy.parent.mkdir()
    subprocess.run(
        [sys.executable, "-c", COPY_SCRIPT, str(scenes["baked"]), str(copy)], check=True, capture_output=True
    )
    alone = preparing.prepare(preparing.SubmitRequest(copy))
    try:  # without the origin: what the add-on reported before (a baked cache "missing", a baked zone "unbaked")
        assert len(alone.missing) == 1 and len(alone.unbaked) == 1
    finally:
        alone.cleanup()
    prepared = preparing.prepare(preparing.SubmitRequest(copy, origin=scenes["baked"]))
    try:
        assert prepared.missing == [] and prepared.unbaked == []
        artist = scenes["baked"].parent
        expected = {
            path.relative_to(artist).as_posix()
            for folder in ("blendcache_shot", "simbake")
            for path in (artist / folder).rglob("*")
            if path.is_file()
        }
        assert expected and expected <= set(prepared.files), (expected, set(prepared.files))
        assert all(prepared.files[rel].path == artist / rel for rel in expected)
    finally:
        prepared.cleanup()


def test_a_render_range_that_ends_before_the_simulations_move_is_silent(scenes: dict[str, Path]) -> None:
    assert unbaked(scenes["unbaked"], frame_start=1, frame_end=1) == []
    assert unbaked(scenes["unbaked"], frame_start=1, frame_end=2) == UNBAKED


def test_a_fluid_domain_is_named_until_baked(tmp_path: Path) -> None:
    script = tmp_path / "make_fluid.py"
    script.write_text(FLUID_SCRIPT)
    for cache_type in ("ALL", "REPLAY"):
        # Mantaflow in bpy 5.0.1 aborts the process right after the save (its grid cache): one save per process,
        # and only the saved file matters here.
        made = subprocess.run(
            [sys.executable, str(script), str(tmp_path), cache_type], capture_output=True, text=True, timeout=300
        )
        assert f'Saved as "fluid_{cache_type.lower()}.blend"' in made.stdout, made.stderr
    assert unbaked(tmp_path / "fluid_all.blend") == [
        "fluid domain 'Fluid' on object 'Domain' (frames 1-3, not baked: data)"
    ]
    assert unbaked(tmp_path / "fluid_replay.blend") == [
        "fluid domain 'Fluid' on object 'Domain' (frames 1-3, cache type Replay: set it to Modular or All and bake)"
    ]


@pytest.mark.parametrize("name", sorted(path.name for path in BLENDFILES.glob("v*.blend")))
def test_old_files_never_break_the_check(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """2.79 to 3.1 DNA (no shared point caches, 2.7x bases, no nested node refs): checked without an error."""
    caplog.set_level(logging.WARNING, logger=simulations.__name__)
    bfile = blendfile.open_cached(BLENDFILES / name)
    try:
        found = simulations.unbaked_simulations(bfile, BLENDFILES)
    finally:
        blendfile.close_all_cached()
    assert found == []
    assert not caplog.records, [record.getMessage() for record in caplog.records]


def test_the_cli_warns_at_submit_and_submits(local_cloud: LocalCloudProcess, scenes: dict[str, Path]) -> None:
    submitted = run_cli(local_cloud, "submit", str(scenes["unbaked"]), "--frames", "1-2")
    assert submitted.returncode == 0, submitted.stderr
    lines = submitted.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("warning: UnbakedSimulation: 7 simulation(s)"))
    assert lines[first + 1 : first + 8] == [f"  {item}" for item in UNBAKED]
    job_id = submitted.stdout.split()[0]
    assert run_cli(local_cloud, "cancel", job_id).returncode == 0
    quiet = run_cli(local_cloud, "submit", str(scenes["baked"]), "--frames", "1-1")
    assert quiet.returncode == 0 and "UnbakedSimulation" not in quiet.stderr, quiet.stderr
    assert run_cli(local_cloud, "cancel", quiet.stdout.split()[0]).returncode == 0


PANEL = r"""
use_local()
open_blend(sys.argv[1], sys.argv[2])
bpy.ops.render.aws_submit()
drive(lambda: view() is not None and (view().unbaked or view().phase in FINISHED_PHASES))
unbaked, phase = list(view().unbaked), view().phase
bpy.ops.render.aws_cancel()
drive(finished)
result(unbaked=unbaked, phase=phase, kept=list(view().unbaked))
"""


BAKED_PANEL = r"""
use_local()
open_blend(sys.argv[1], sys.argv[2])
bpy.ops.render.aws_submit()
SEEN = {"uploading", "counting frames", "missing files", *FINISHED_PHASES}
drive(lambda: view() is not None and view().phase in SEEN)
got = dict(unbaked=list(view().unbaked), missing=list(view().missing), phase=view().phase)
bpy.ops.render.aws_cancel()
drive(finished)
result(**got)
"""


def test_the_panel_is_quiet_for_a_baked_scene(
    local_cloud: LocalCloudProcess, scenes: dict[str, Path], tmp_path: Path
) -> None:
    """Through the add-on's copy: disk bakes beside the artist's file are neither missing nor unbaked."""
    got = run_blender(
        f"sys.argv[1:] = {[str(scenes['baked']), str(tmp_path / 'out')]!r}\n" + BAKED_PANEL, local_cloud, tmp_path
    )
    assert got == {"unbaked": [], "missing": [], "phase": got["phase"]} and got["phase"] != "missing files", got


def test_the_panel_gets_the_names_before_the_render(
    local_cloud: LocalCloudProcess, scenes: dict[str, Path], tmp_path: Path
) -> None:
    """What the panel draws (the job's view) names them while preparing or uploading, and keeps them after."""
    got = run_blender(
        f"sys.argv[1:] = {[str(scenes['unbaked']), str(tmp_path / 'out')]!r}\n" + PANEL, local_cloud, tmp_path
    )
    assert got["unbaked"] == UNBAKED
    assert got["phase"] in ("preparing", "uploading", "missing files"), got
    assert got["kept"] == UNBAKED
