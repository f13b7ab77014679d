"""Simulations that are not baked, found in the .blend before anything is uploaded (issue 15.4).

The farm renders a job in chunks that start mid-shot, each in a fresh Blender: frame 50 of an unbaked cloth, particle
system or simulation zone is then computed from nothing (the cloth hangs at rest, particles are missing), while the
artist's Blender showed it simulated from the first frame. Nothing fails; the frames are just wrong. So before the
upload the artist is told, by name, which simulations are not baked: ``UnbakedSimulation`` is a warning (the CLI
prints it, the panel shows it), never a stop, because a simulation may be meant to start at each chunk's first frame
or be invisible in the shot.

Read from the file's DNA with blender-asset-tracer (no bpy: the core and the CLI run without Blender), with the
scene and object walks of :mod:`render_contract.blend_dna` that the frame counter uses too. What counts as a
simulation, and as baked (constants from Blender's ``DNA_*_types.h``, read back from files bpy 5.0.1 baked):

* point caches (cloth, soft body, particle systems with physics or hair dynamics, dynamic paint surfaces, the
  scene's rigid body world): baked when the cache has ``PTCACHE_BAKED`` (memory bakes are saved in the .blend, disk
  bakes in ``blendcache_<file>/``, which packing uploads) or reads an external cache (``PTCACHE_EXTERNAL``);
* Mantaflow fluid domains: baked when ``cache_flag`` has ``FLUID_DOMAIN_BAKED_DATA`` (plus ``BAKED_NOISE`` for gas
  with noise, ``BAKED_MESH`` for liquid with a mesh); a *Replay* cache is never baked (it fills only while the
  timeline plays from the start);
* Geometry Nodes simulation zones (a nodes modifier's bakes whose node is a Simulation Output, also inside node
  groups): baked when the bake is packed into the .blend or its folder holds ``<bake id>/meta/`` files. Bake nodes
  are not simulations (they need no past frames) and are left alone.

Ignored: modifiers disabled for rendering, a muted rigid body world or one without objects, dynamic paint surfaces
that bake to image sequences, and every simulation whose first frame is at or after the last rendered frame (it has
not moved yet in any rendered frame). A simulation that *ended* before the render range still counts: the rendered
frames show its final state, which a chunk cannot compute. Objects of linked libraries, the old (2.7x) smoke and
Elbeem fluid modifiers are not checked. A file the check cannot understand yields no warning rather than a failed
submit: the named ``BlendFileUnreadable`` comes from packing, which reads the same file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blender_asset_tracer import cdefs
from blender_asset_tracer.blendfile import iterators
from render_contract import blend_dna
from render_contract.blend_dna import deref, id_name, iter_list

log = logging.getLogger(__name__)

Block = Any
"""A blender-asset-tracer ``BlendFileBlock``."""

# DNA_pointcache_types.h
PTCACHE_BAKED = 1 << 0  # not in blender_asset_tracer.cdefs
PTCACHE_EXTERNAL = cdefs.PTCACHE_EXTERNAL
# DNA_modifier_types.h
MODIFIER_MODE_RENDER = 1 << 1
MOD_SOFTBODY = 10
MOD_PARTICLE_SYSTEM = cdefs.eModifierType_ParticleSystem
MOD_CLOTH = cdefs.eModifierType_Cloth
MOD_DYNAMIC_PAINT = cdefs.eModifierType_DynamicPaint
MOD_FLUID = cdefs.eModifierType_Fluid
MOD_NODES = cdefs.eModifierType_Nodes
SIMULATING_MODIFIERS = frozenset(
    {MOD_SOFTBODY, MOD_PARTICLE_SYSTEM, MOD_CLOTH, MOD_DYNAMIC_PAINT, MOD_FLUID, MOD_NODES}
)
NODES_BAKE_CUSTOM_FRAME_RANGE = 1 << 0
NODES_BAKE_CUSTOM_PATH = cdefs.NODES_MODIFIER_BAKE_CUSTOM_PATH
# DNA_particle_types.h
PART_HAIR = 2
PART_PHYS_NO, PART_PHYS_KEYED = 0, 2
PSYS_HAIR_DYNAMICS = 1 << 2
# DNA_dynamicpaint_types.h
DPAINT_CANVAS = 1
DPAINT_SURFACE_IMAGE_SEQUENCE = 2
# DNA_rigidbody_types.h
RBW_FLAG_MUTED = 1 << 0
# DNA_fluid_types.h
FLUID_TYPE_DOMAIN = 1
FLUID_DOMAIN_GAS, FLUID_DOMAIN_LIQUID = 0, 1
FLUID_DOMAIN_USE_NOISE = 1 << 1
FLUID_DOMAIN_USE_MESH = 1 << 9
FLUID_DOMAIN_BAKED_DATA = 1 << 1
FLUID_DOMAIN_BAKED_NOISE = 1 << 3
FLUID_DOMAIN_BAKED_MESH = 1 << 5
FLUID_DOMAIN_CACHE_REPLAY = 0
SIMULATION_OUTPUT = b"GeometryNodeSimulationOutput"
GROUP_NODE = b"GeometryNodeGroup"
MAX_REPORTED = 200
MAX_GROUP_DEPTH = 64


@dataclass(frozen=True)
class Simulation:
    """One simulation that is not baked: what it is, where, and the frames it simulates."""

    kind: str
    """``cloth``, ``soft body``, ``particle system``, ``dynamic paint surface``, ``rigid body world``,
    ``fluid domain`` or ``simulation zone``."""
    where: str
    """``'Cloth' on object 'Flag'``, ``of scene 'Scene'``: the names the artist sees in Blender."""
    frame_start: int
    frame_end: int
    detail: str = ""

    def describe(self) -> str:
        detail = f", {self.detail}" if self.detail else ""
        return f"{self.kind} {self.where} (frames {self.frame_start}-{self.frame_end}{detail})"


def unbaked_simulations(
    bfile: Any, blend_dir: Path, scene: str | None = None, frame_end: int | None = None
) -> list[Simulation]:
    """The simulations of the rendered scene that are not baked and touch the rendered frames.

    ``bfile`` is the open BAT file; ``blend_dir`` resolves ``//`` paths (disk bakes); ``scene`` is the scene the
    job renders (None: the file's active one, as the frame counter chooses); ``frame_end`` overrides the scene's
    last frame as the submission does (the first rendered frame does not matter: a simulation that starts before it
    still shapes it). Best effort by design (see the module's docstring).
    """
    try:
        return _unbaked(bfile, blend_dir, scene, frame_end)[:MAX_REPORTED]
    except Exception as error:  # a warning must never stop a submission
        log.warning("could not check the file's simulations: %s: %s", type(error).__name__, error)
        return []


def _unbaked(bfile: Any, blend_dir: Path, scene_name: str | None, frame_end: int | None) -> list[Simulation]:
    scenes = list(bfile.find_blocks_from_code(b"SC"))
    chosen = [block for block in scenes if id_name(block) == scene_name] if scene_name is not None else []
    if not chosen:
        active = blend_dna.active_scene(bfile, scenes)
        chosen = [active] if active is not None else scenes[:1]
    found: list[Simulation] = []
    for scene in chosen:
        render_end = frame_end if frame_end is not None else int(scene.get((b"r", b"efra")))
        scene_start = int(scene.get((b"r", b"sfra")))
        scene_end = int(scene.get((b"r", b"efra")))
        per_object = []  # names are read only for objects with a simulation: thousands of objects stay cheap
        for ob in blend_dna.scene_objects(scene):
            if simulated := list(_object_simulations(ob, blend_dir, scene_start, scene_end)):
                per_object.append((id_name(ob), simulated))
        candidates = list(_rigid_body_world(scene))
        candidates.extend(sim for _, simulated in sorted(per_object, key=lambda pair: pair[0]) for sim in simulated)
        found.extend(sim for sim in candidates if sim.frame_start < render_end)
    return found


def _cache_baked(cache: Block | None) -> bool:
    return cache is None or bool(int(cache.get(b"flag", default=0)) & (PTCACHE_BAKED | PTCACHE_EXTERNAL))


def _cache_range(cache: Block) -> tuple[int, int]:
    return int(cache.get(b"startframe", default=1)), int(cache.get(b"endframe", default=250))


def _shared_cache(block: Block) -> Block | None:
    """A soft body's or rigid body world's point cache: ``shared->pointcache`` since 2.8, ``pointcache`` before."""
    shared = deref(block, b"shared") if block.has_field(b"shared") else None
    if shared is not None and shared.has_field(b"pointcache"):
        return deref(shared, b"pointcache")
    return deref(block, b"pointcache") if block.has_field(b"pointcache") else None


def _rigid_body_world(scene: Block) -> Iterator[Simulation]:
    world = deref(scene, b"rigidbody_world") if scene.has_field(b"rigidbody_world") else None
    if world is None or int(world.get(b"flag", default=0)) & RBW_FLAG_MUTED or not world.get(b"group", default=0):
        return
    cache = _shared_cache(world)
    if cache is not None and not _cache_baked(cache):
        yield Simulation("rigid body world", f"of scene '{id_name(scene)}'", *_cache_range(cache))


def _object_simulations(ob: Block, blend_dir: Path, scene_start: int, scene_end: int) -> Iterator[Simulation]:
    for modifier in iter_list(ob, b"modifiers"):
        kind = int(modifier.get((b"modifier", b"type"), default=0))
        if kind not in SIMULATING_MODIFIERS:
            continue
        if not int(modifier.get((b"modifier", b"mode"), default=0)) & MODIFIER_MODE_RENDER:
            continue
        obname = id_name(ob)
        name = str(modifier.get((b"modifier", b"name"), as_str=True))
        where = f"'{name}' on object '{obname}'"
        if kind == MOD_CLOTH:
            cache = deref(modifier, b"point_cache")
            if cache is not None and not _cache_baked(cache):
                yield Simulation("cloth", where, *_cache_range(cache))
        elif kind == MOD_SOFTBODY:
            soft = deref(ob, b"soft") if ob.has_field(b"soft") else None
            cache = _shared_cache(soft) if soft is not None else None
            if cache is not None and not _cache_baked(cache):
                yield Simulation("soft body", where, *_cache_range(cache))
        elif kind == MOD_PARTICLE_SYSTEM:
            psys = deref(modifier, b"psys")
            if psys is not None:
                yield from _particles(psys, obname)
        elif kind == MOD_DYNAMIC_PAINT:
            yield from _dynamic_paint(modifier, obname)
        elif kind == MOD_FLUID:
            yield from _fluid(modifier, where)
        elif kind == MOD_NODES:
            yield from _simulation_zones(modifier, where, blend_dir, scene_start, scene_end)


def _particles(psys: Block, obname: str) -> Iterator[Simulation]:
    settings = deref(psys, b"part")
    if settings is None:
        return
    if int(settings.get(b"type", default=0)) == PART_HAIR:
        simulated = bool(int(psys.get(b"flag", default=0)) & PSYS_HAIR_DYNAMICS)
    else:
        simulated = int(settings.get(b"phystype", default=0)) not in (PART_PHYS_NO, PART_PHYS_KEYED)
    cache = deref(psys, b"pointcache")
    if simulated and cache is not None and not _cache_baked(cache):
        name = str(psys.get(b"name", as_str=True))
        yield Simulation("particle system", f"'{name}' on object '{obname}'", *_cache_range(cache))


def _dynamic_paint(modifier: Block, obname: str) -> Iterator[Simulation]:
    canvas = deref(modifier, b"canvas")
    if canvas is None or not int(modifier.get(b"type", default=0)) & DPAINT_CANVAS:
        return
    for surface in iter_list(canvas, b"surfaces"):
        if int(surface.get(b"format", default=0)) == DPAINT_SURFACE_IMAGE_SEQUENCE:
            continue  # baked to images by its own operator, not a point cache
        cache = deref(surface, b"pointcache")
        if cache is not None and not _cache_baked(cache):
            name = str(surface.get(b"name", as_str=True))
            yield Simulation("dynamic paint surface", f"'{name}' on object '{obname}'", *_cache_range(cache))


def _fluid(modifier: Block, where: str) -> Iterator[Simulation]:
    domain = deref(modifier, b"domain")
    if domain is None or int(modifier.get(b"type", default=0)) != FLUID_TYPE_DOMAIN:
        return
    frames = int(domain.get(b"cache_frame_start", default=1)), int(domain.get(b"cache_frame_end", default=250))
    flag, options = int(domain.get(b"cache_flag", default=0)), int(domain.get(b"flags", default=0))
    if int(domain.get(b"cache_type", default=0)) == FLUID_DOMAIN_CACHE_REPLAY:
        yield Simulation("fluid domain", where, *frames, "cache type Replay: set it to Modular or All and bake")
        return
    missing = [] if flag & FLUID_DOMAIN_BAKED_DATA else ["data"]
    gas = int(domain.get(b"type", default=FLUID_DOMAIN_GAS)) == FLUID_DOMAIN_GAS
    if gas and options & FLUID_DOMAIN_USE_NOISE and not flag & FLUID_DOMAIN_BAKED_NOISE:
        missing.append("noise")
    if not gas and options & FLUID_DOMAIN_USE_MESH and not flag & FLUID_DOMAIN_BAKED_MESH:
        missing.append("mesh")
    if missing:
        yield Simulation("fluid domain", where, *frames, f"not baked: {', '.join(missing)}")


def _simulation_zones(
    modifier: Block, where: str, blend_dir: Path, scene_start: int, scene_end: int
) -> Iterator[Simulation]:
    bakes = deref(modifier, b"bakes") if modifier.has_field(b"bakes") else None
    tree = deref(modifier, b"node_group")
    if bakes is None or tree is None:
        return
    folder_field = b"bake_directory" if modifier.has_field(b"bake_directory") else b"simulation_bake_directory"
    modifier_folder = _string(modifier, folder_field)
    for bake in iterators.dynamic_array(bakes):
        bake_id, flag = int(bake.get(b"id")), int(bake.get(b"flag", default=0))
        if _node_idname(tree, bake_id) != SIMULATION_OUTPUT:
            continue
        if bake.has_field(b"packed") and bake.get(b"packed", default=0):
            continue  # packed into the .blend
        folder = _string(bake, b"directory") if flag & NODES_BAKE_CUSTOM_PATH else modifier_folder
        if folder and _disk_bake_exists(blend_dir, folder, bake_id):
            continue
        if flag & NODES_BAKE_CUSTOM_FRAME_RANGE:
            frames = int(bake.get(b"frame_start")), int(bake.get(b"frame_end"))
        else:
            frames = scene_start, scene_end  # a simulation zone runs over the scene's range unless told otherwise
        yield Simulation("simulation zone", f"in modifier {where}", *frames)


def _string(block: Block, field: bytes) -> str:
    """A ``char *`` field's text ('' when null or absent)."""
    if not block.has_field(field):
        return ""
    text = deref(block, field)
    return text.as_string() if text is not None else ""


def _disk_bake_exists(blend_dir: Path, folder: str, bake_id: int) -> bool:
    """Blender writes a disk bake as ``<folder>/<bake id>/meta/<frame>.json`` (plus blobs)."""
    base = blend_dir / folder[2:] if folder.startswith("//") else Path(folder)
    meta = base / str(bake_id) / "meta"
    try:
        return meta.is_dir() and any(meta.iterdir())
    except OSError:
        return False


def _node_idname(tree: Block, ref_id: int, depth: int = 0) -> bytes | None:
    """The node a nested node reference (a bake's id) names, through group nodes; None if it cannot be resolved."""
    if depth > MAX_GROUP_DEPTH or not tree.has_field(b"nested_node_refs"):
        return None
    refs = deref(tree, b"nested_node_refs")
    if refs is None:
        return None
    path: tuple[int, int] | None = None
    for ref in iterators.dynamic_array(refs):
        if int(ref.get(b"id")) == ref_id:
            path = int(ref.get((b"path", b"node_id"))), int(ref.get((b"path", b"id_in_node")))
            break
    if path is None:
        return None
    for node in iter_list(tree, b"nodes"):
        if int(node.get(b"identifier", default=-1)) != path[0]:
            continue
        idname = bytes(node.get(b"idname"))
        if idname == GROUP_NODE:
            group = deref(node, b"id")
            return _node_idname(group, path[1], depth + 1) if group is not None else None
        return idname
    return None
