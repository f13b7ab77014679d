"""Walking a .blend's DNA the way Blender does: pointers, lists, the rendered scene and its objects.

Shared by the frame counter (``lambda/frame_counter/blend_facts.py``) and the client core
(``addon/core/simulations.py``), which both read files with blender-asset-tracer (BAT) and must agree on what
"the scene" and "its objects" are. Stdlib only, like the rest of the contract: the functions take BAT's
``BlendFile``/``BlendFileBlock`` objects (anything with their ``get``, ``has_field``, ``addr_old``, ``bfile`` and
``block_from_addr``) without importing BAT, so the Lambda layer and the add-on's wheel stay as they are.

Every walk is bounded and cycle-safe (:data:`MAX_LIST_WALK`): a corrupt file must not hang a Lambda or a submit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

MAX_LIST_WALK = 100_000
"""Bound on linked-list and collection walks, so a corrupt (cyclic) file cannot hang the reader."""

Block = Any
"""A BAT ``BlendFileBlock`` (typed loosely: the contract does not depend on BAT)."""


def deref(block: Block, path: bytes | tuple[bytes, ...]) -> Block | None:
    """A pointer field's block, or None when the pointer is null, dangling or the field does not exist."""
    address = block.get(path, default=0)
    if not isinstance(address, int) or address == 0:
        return None
    found: Block | None = block.bfile.block_from_addr.get(address)
    return found


def iter_list(block: Block, field: bytes) -> Iterator[Block]:
    """The links of a ``ListBase`` field, bounded and cycle-safe."""
    link = deref(block, (field, b"first"))
    seen: set[int] = set()
    while link is not None and link.addr_old not in seen and len(seen) < MAX_LIST_WALK:
        seen.add(link.addr_old)
        yield link
        link = deref(link, b"next")


def id_name(block: Block) -> str:
    """An ID's name without its two-letter code (``SCScene`` -> ``Scene``, ``OBCube`` -> ``Cube``)."""
    name = getattr(block, "id_name", None)
    return name[2:].decode("utf-8", "replace") if isinstance(name, bytes) else ""


def active_scene(bfile: Any, scenes: list[Block]) -> Block | None:
    """The scene Blender renders when none is named: ``FileGlobal.curscene``, else the first window's scene
    (``win->scene``, or ``win->screen->scene`` in 2.7x); None when the file does not say."""
    by_address = {block.addr_old: block for block in scenes}
    for glob in bfile.find_blocks_from_code(b"GLOB"):
        scene = by_address.get(glob.get(b"curscene", default=0))
        if scene is not None:
            return scene
    for wm in bfile.find_blocks_from_code(b"WM"):
        window = deref(wm, (b"windows", b"first"))
        if window is None:
            continue
        if window.has_field(b"scene"):
            address = window.get(b"scene")
        else:
            screen = deref(window, b"screen")
            address = screen.get(b"scene", default=0) if screen is not None else 0
        if address in by_address:
            return by_address[address]
    return None


def scene_objects(scene: Block) -> list[Block]:
    """The objects of a scene, each once: its master collection and child collections (2.8+) or its bases (2.7x).

    Objects of linked libraries are not in this file and so not here; instanced collections are not followed.
    """
    objects: dict[int, Block] = {}
    for base in iter_list(scene, b"base"):
        ob = deref(base, b"object")
        if ob is not None:
            objects.setdefault(ob.addr_old, ob)
    master = deref(scene, b"master_collection")
    pending = [master] if master is not None else []
    visited: set[int] = set()
    while pending and len(visited) < MAX_LIST_WALK:
        collection = pending.pop()
        if collection.addr_old in visited:
            continue
        visited.add(collection.addr_old)
        for link in iter_list(collection, b"gobject"):
            ob = deref(link, b"ob")
            if ob is not None:
                objects.setdefault(ob.addr_old, ob)
        pending.extend(
            child for link in iter_list(collection, b"children") if (child := deref(link, b"collection")) is not None
        )
    return list(objects.values())
