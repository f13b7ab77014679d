"""Builds the demo scene (and the tests' tiny scenes) with real Blender: ``python scripts/demo_scene.py OUT.blend``.

An animated scene with visible motion: a cube travels across the frame and spins, under a sun, seen by a
camera. Options set every fact the frame counter reads (range, step, fps, resolution, engine, camera, scenes,
compression), so tests make exactly the file they need. Runs in a process of its own: bpy is global state.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ENGINES = {"workbench": "BLENDER_WORKBENCH", "eevee": "BLENDER_EEVEE", "cycles": "CYCLES"}


def build(args: argparse.Namespace) -> None:
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.name = args.scene
    _fill(scene, args)
    for extra in args.extra_scene:
        other = bpy.data.scenes.new(extra)
        _fill(other, args, frame_end=args.frame_start)
    bpy.context.window_manager.windows[0].scene = scene if bpy.context.window_manager.windows else None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(Path(args.out).resolve()), compress=args.compress)


def _fill(scene, args: argparse.Namespace, frame_end: int | None = None) -> None:
    import bpy

    scene.frame_start = args.frame_start
    scene.frame_end = args.frame_end if frame_end is None else frame_end
    scene.frame_step = args.frame_step
    scene.render.fps = args.fps
    scene.render.fps_base = args.fps_base
    scene.render.resolution_x, scene.render.resolution_y = args.resolution
    scene.render.resolution_percentage = args.percentage
    scene.render.engine = ENGINES[args.engine]
    scene.render.image_settings.file_format = args.file_format
    if args.engine == "cycles":
        scene.cycles.samples = args.samples
        scene.cycles.use_denoising = False
        scene.cycles.device = "CPU"
    elif args.engine == "eevee":
        scene.eevee.taa_render_samples = args.samples

    world = bpy.data.worlds.new(f"{scene.name}-world")
    world.color = (0.25, 0.35, 0.55)
    scene.world = world

    mesh = bpy.data.meshes.new(f"{scene.name}-cube")
    half = 1.0
    verts = [(x, y, z) for x in (-half, half) for y in (-half, half) for z in (-half, half)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(verts, [], faces)
    cube = bpy.data.objects.new(f"{scene.name}-cube", mesh)
    material = bpy.data.materials.new(f"{scene.name}-orange")
    material.diffuse_color = (1.0, 0.35, 0.05, 1.0)
    material.use_nodes = True
    material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (1.0, 0.35, 0.05, 1.0)
    mesh.materials.append(material)
    scene.collection.objects.link(cube)

    ground_mesh = bpy.data.meshes.new(f"{scene.name}-ground")
    ground_mesh.from_pydata([(-20, -20, -1.2), (20, -20, -1.2), (20, 20, -1.2), (-20, 20, -1.2)], [], [(0, 1, 2, 3)])
    scene.collection.objects.link(bpy.data.objects.new(f"{scene.name}-ground", ground_mesh))

    first, last = scene.frame_start, max(scene.frame_end, scene.frame_start + 1)
    cube.location = (-4.0, 0.0, 0.0)
    cube.rotation_euler = (0.0, 0.0, 0.0)
    cube.keyframe_insert("location", frame=first)
    cube.keyframe_insert("rotation_euler", frame=first)
    cube.location = (4.0, 0.0, 0.5)
    cube.rotation_euler = (0.0, 0.0, math.pi * 1.5)
    cube.keyframe_insert("location", frame=last)
    cube.keyframe_insert("rotation_euler", frame=last)

    sun = bpy.data.objects.new(f"{scene.name}-sun", bpy.data.lights.new(f"{scene.name}-sun", "SUN"))
    sun.rotation_euler = (0.6, 0.2, 0.4)
    sun.data.energy = 4.0
    scene.collection.objects.link(sun)

    if args.camera:
        camera = bpy.data.objects.new(f"{scene.name}-camera", bpy.data.cameras.new(f"{scene.name}-camera"))
        camera.location = (0.0, -12.0, 3.0)
        camera.rotation_euler = (math.radians(80), 0.0, 0.0)
        scene.collection.objects.link(camera)
        scene.camera = camera


def make(path: Path, *options: str, python: str | Path | None = None) -> Path:
    """Writes ``path`` by running this script in a process of its own (bpy is global state); for tests and benches.
    ``python`` is another interpreter with its own bpy (a runtime of another Blender series) to save it with."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [str(python or sys.executable), __file__, str(path), *options],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--scene", default="Scene")
    parser.add_argument("--extra-scene", action="append", default=[], help="another scene in the file (repeatable)")
    parser.add_argument("--frame-start", type=int, default=1)
    parser.add_argument("--frame-end", type=int, default=48)
    parser.add_argument("--frame-step", type=int, default=1)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--fps-base", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, nargs=2, default=(320, 180))
    parser.add_argument("--percentage", type=int, default=100)
    parser.add_argument("--engine", choices=sorted(ENGINES), default="cycles")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--file-format", default="PNG")
    parser.add_argument("--no-camera", dest="camera", action="store_false")
    parser.add_argument("--compress", action="store_true", help="save compressed (Zstandard)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    build(parse(sys.argv[1:]))
