"""Everything a .blend needs, laid out as the job tree the worker rebuilds: blender-asset-tracer (BAT) does the work.

BAT traces images (UDIM tiles and sequences too), linked libraries (recursively), fonts, sounds, movie clips and
caches, and its :class:`~blender_asset_tracer.pack.Packer` decides where each file goes in a pack and rewrites the
paths of the .blend files that refer to moved files. We follow its layout: the main file at the pack's root, files
under the main file's folder at their own relative places (``//textures/wood.png`` keeps working unchanged) and
everything else under ``_outside_project/<absolute path without its root>`` (``C:\\tex\\a.png`` becomes
``_outside_project/C/tex/a.png``), with the .blend files that point there rewritten.

What we change is *how the pack is made*: BAT's own transferrer copies every asset into the target folder, which
for a 200 MB project means writing 200 MB just to hash and upload it. Our transferrer records (path in the job
tree -> local file to read) instead, and only the rewritten .blend copies (which BAT writes to its own temporary
folder) are moved into ``work_dir``. The artist's files are only ever read.
"""

from __future__ import annotations

import shutil
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from blender_asset_tracer import blendfile, bpathlib, cdefs, pack
from blender_asset_tracer.blendfile import iterators
from blender_asset_tracer.pack import transfer
from blender_asset_tracer.trace import blocks2assets, expanders, file_sequence, result
from render_contract.errors import BlendFileUnreadable
from render_contract.names import safe_name
from render_contract.paths import check_tree_path

OUTSIDE_PROJECT = "_outside_project"
"""BAT's folder for files that are not under the main file's folder (kept so a BAT pack and a job tree agree)."""

_LOCK = threading.Lock()
"""BAT keeps opened .blend files in a process-wide cache: one packing at a time per process."""


@dataclass(frozen=True)
class MissingAsset:
    """A file the scene refers to that does not exist on this disk, and which data block wants it."""

    path: str
    used_by: str


@dataclass
class PackedTree:
    """The job tree: ``files`` maps POSIX paths relative to the job root to the local file holding their bytes."""

    main: str
    files: dict[str, Path]
    missing: list[MissingAsset] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    """Paths (in the tree) of .blend files whose copies had their paths rewritten; they live in ``work_dir``."""


def pack_blend(
    blend: Path,
    work_dir: Path,
    inspect: Callable[[blendfile.BlendFile], None] | None = None,
    origin: Path | None = None,
) -> PackedTree:
    """Traces ``blend`` and lays out its job tree; rewritten .blend copies are written under ``work_dir``.

    ``work_dir`` must be an empty folder the caller owns (it is BAT's pack target, so rewritten files land at
    their place in the tree). Missing files are reported, never fatal: the caller asks the artist.

    ``inspect``, if given, is called with the main file as BAT opened it for tracing (so a compressed file is not
    decompressed twice), before BAT rebinds that object to the rewritten copy.

    ``origin`` is the artist's .blend when ``blend`` is a copy saved elsewhere (the add-on saves one to a temporary
    folder). Blender's ``relative_remap`` rewrites the copy's stored paths, but simulation caches have paths that
    are implicit or not remapped: a point cache on disk lives in ``//blendcache_<file name>/`` and a Geometry Nodes
    bake folder stays ``//simbake``. A sequence the main file names relative to itself that the copy's folder
    lacks is then taken from the artist's folder, at the same place in the tree.
    """
    blend = Path(blend).absolute()
    work_dir = Path(work_dir).absolute()
    _fix_bat_for_blender_5()
    _fix_bat_sequencer()
    with _LOCK:
        packer = _RecordingPacker(blend, blend.parent, str(work_dir))
        packer.origin_dir = Path(origin).absolute().parent if origin is not None else None
        try:
            packer.strategise()
            if inspect is not None:
                inspect(blendfile.open_cached(blend))
            packer.execute()
        except (blendfile.exceptions.BlendFileError, EOFError, ValueError, OSError) as error:
            # OSError: a corrupt block size makes BAT seek before the file's start (EINVAL), or a file can't be read.
            raise BlendFileUnreadable(f"cannot read the dependencies of {blend.name}: {error}") from error
        except pack.Aborted as error:
            raise BlendFileUnreadable(f"packing {blend.name} failed: {error}") from error
        finally:
            packer.close()
            # Cached files stay open otherwise: on Windows the artist could not save over them.
            blendfile.close_all_cached()
    return _tree(packer, blend, work_dir)


def _tree(packer: _RecordingPacker, blend: Path, work_dir: Path) -> PackedTree:
    files: dict[str, Path] = {}
    rewritten: list[str] = []
    for target, source in {**packer.borrowed, **packer.recorded}.items():
        rel = check_tree_path(PurePosixPath(Path(target).relative_to(work_dir).as_posix()).as_posix())
        files[rel] = source
        if source.is_relative_to(work_dir):
            rewritten.append(rel)
    natural = Path(packer.output_path).relative_to(work_dir).as_posix()
    main = safe_name(blend.name, limit=120)
    if not main.endswith(".blend"):
        main += ".blend"
    if main != natural:
        if main in files:  # another file already has the safe name: keep the artist's name
            main = natural
        else:
            files[main] = files.pop(natural)
            rewritten = [main if rel == natural else rel for rel in rewritten]
    missing = sorted(
        (MissingAsset(str(path), packer.used_by(path)) for path in packer.missing_files), key=lambda m: m.path
    )
    return PackedTree(main, dict(sorted(files.items())), missing, sorted(rewritten))


class _Recorder(transfer.FileTransferer):
    """A BAT transferrer that copies nothing: it notes where each asset goes and moves only rewritten copies.

    BAT queues a *move* only for files it wrote itself (rewritten .blend copies in its temporary folder), so a
    move is the one action that touches the disk, and it never touches the artist's files. Everything happens at
    once in the caller's thread: BAT's queue thread polls with half-second timeouts, which alone would cost every
    submission a second.
    """

    def __init__(self) -> None:
        super().__init__()
        self.recorded: dict[Path, Path] = {}

    def start(self) -> None:
        """Nothing to start: :meth:`queue_copy` and :meth:`queue_move` do their work as they are called."""

    def run(self) -> None:
        """Never runs (no thread)."""

    def queue_copy(self, src: Path, dst: PurePath) -> None:
        self.recorded[Path(dst)] = Path(src)

    def queue_move(self, src: Path, dst: PurePath) -> None:
        target = Path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(target))
        self.recorded[target] = target

    def done_and_join(self) -> None:
        self.done.set()


class _RecordingPacker(pack.Packer):
    """BAT's packer with :class:`_Recorder` as transferrer, no ``pack-info.txt``, and who-uses-what for misses."""

    def __init__(self, bfile: Path, project: Path, target: str) -> None:
        super().__init__(bfile, project, target)
        self._users: dict[Path, list[str]] = defaultdict(list)
        self._recorder: _Recorder | None = None
        self.origin_dir: Path | None = None
        """The artist's folder when the main file is a copy saved elsewhere (see :func:`pack_blend`)."""
        self.borrowed: dict[Path, Path] = {}
        """(target path -> the artist's file) for sequences found next to the artist's file, not the copy."""

    @property
    def recorded(self) -> dict[Path, Path]:
        return self._recorder.recorded if self._recorder is not None else {}

    def _create_file_transferer(self) -> transfer.FileTransferer:
        self._recorder = _Recorder()
        return self._recorder

    def _write_info_file(self) -> None:
        """BAT's ``pack-info.txt`` is for humans opening a pack; the worker reads the manifest instead."""

    def _find_new_paths(self) -> None:
        """Files inside the project keep their place even when referred to by an absolute path.

        BAT moves every absolutely referenced file to ``_outside_project/``, also one inside the project. For a
        library that breaks its own relative paths (``//../textures/red.png`` from ``_outside_project/.../libs/``
        points nowhere, and BAT does not rewrite paths that were relative and inside the project). Keeping the file
        at its project place and rewriting only the absolute reference to it is correct for every kind of file.
        """
        super()._find_new_paths()
        project = bpathlib.make_absolute(self.project)
        for path in self._new_location_paths:
            absolute = bpathlib.make_absolute(path)
            if absolute.is_relative_to(project):
                self._actions[path].new_path = self._target_path / absolute.relative_to(project)

    def _visit_asset(self, asset_path: Path, usage: result.BlockUsage) -> None:
        self._note_user(asset_path, usage)
        super()._visit_asset(asset_path, usage)

    def _visit_sequence(self, asset_path: Path, usage: result.BlockUsage) -> None:
        simulation_cache = usage.block.dna_type.dna_type_id in _SIMULATION_CACHES
        if (simulation_cache or self.origin_dir is not None) and not _has_files(asset_path):
            if self._borrow_from_origin(asset_path, usage):
                return
            if simulation_cache:
                # A simulation not baked yet has no cache folder: that is no missing file (the artist could not
                # "fix the path"), it is an unbaked simulation, which simulations.py names as UnbakedSimulation.
                return
        self._note_user(asset_path, usage)
        super()._visit_sequence(asset_path, usage)

    def _borrow_from_origin(self, asset_path: Path, usage: result.BlockUsage) -> bool:
        """Takes a sequence the main file names relative to itself from the artist's folder (see pack_blend)."""
        main = bpathlib.make_absolute(Path(self.blendfile))
        if self.origin_dir is None or bpathlib.make_absolute(Path(usage.block.bfile.filepath)) != main:
            return False
        try:
            relative = bpathlib.make_absolute(asset_path).relative_to(main.parent)
        except ValueError:
            return False
        found = _existing_files(self.origin_dir / relative)
        for path in found:
            self.borrowed[Path(self._target_path) / path.relative_to(self.origin_dir)] = path
        return bool(found)

    def _note_user(self, asset_path: Path, usage: result.BlockUsage) -> None:
        """Noted now: rewriting later rebinds the usage's block to BAT's temporary copy of the file."""
        name = usage.block_name.split(_USAGE_DETAIL)[0].decode("utf-8", "replace")
        kind = _ID_KINDS.get(name[:2], "")
        label = f"{kind} {name[2:]!r}" if kind else repr(name)
        self._users[asset_path].append(f"{label} in {Path(usage.block.bfile.filepath).name}")

    def used_by(self, path: Path) -> str:
        """``<data block> in <file>`` for each user of ``path``, e.g. ``image 'wood.png' in lib.blend``."""
        return ", ".join(dict.fromkeys(self._users.get(path, []))) or "?"


_SIMULATION_CACHES = frozenset({b"FluidDomainSettings", b"NodesModifierData", b"NodesModifierBake"})
"""DNA structs whose BAT usages are simulation cache folders (Mantaflow's cache, Geometry Nodes bakes)."""


def _has_files(path: Path) -> bool:
    """Whether a BAT sequence path (a folder, a glob, a numbered file) names at least one existing file."""
    return bool(_existing_files(path))


def _existing_files(path: Path) -> list[Path]:
    """The existing files a BAT sequence path (a folder, a glob, a numbered file) names."""
    try:
        return [found for found in file_sequence.expand_sequence(path) if found.is_file()]
    except file_sequence.DoesNotExist:
        return []


_ID_KINDS = {
    "IM": "image",
    "LI": "library",
    "VF": "font",
    "SO": "sound",
    "MC": "movie clip",
    "CF": "cache file",
    "VO": "volume",
    "ME": "mesh",
    "OB": "object",
    "SC": "scene",
    "LA": "light",
    "SQ": "sequencer strip",
}

_FIXED = False
_USAGE_DETAIL = b"\0"
"""Separates a usage's block name from what makes it unique (a strip's file); only the name is shown."""


def _fix_bat_for_blender_5() -> None:
    """BAT 1.23 reads a material's (and world's, light's, texture's) node tree from the wrong field in Blender 5.0
    files: it looks up ``compositing_node_group`` (the Scene's new field) for every ID, finds nothing, and so never
    sees the images of materials inside linked libraries (the main file is scanned block by block, which hides the
    bug there). This expander reads whichever of the two fields the block has. Idempotent."""
    global _FIXED
    if _FIXED:
        return

    def expand_nodetree_id(block: Any) -> Iterator[Any]:
        for name in (b"nodetree", b"compositing_node_group"):
            if block.dna_type.has_field(name):
                tree = block.get_pointer(name, None)
                if tree is not None:
                    yield from expanders._expand_generic_nodetree(tree)

    expanders._expand_generic_nodetree_id = expand_nodetree_id
    _FIXED = True


def _fix_bat_sequencer() -> None:
    """BAT 1.23 reads the sequencer's media with the wrong path whenever a strip's folder is the .blend's own.

    A strip keeps its folder (``StripData.dir``) apart from its file names (``StripElem.name``); BAT joins them with
    ``BlendPath.__truediv__``, which strips the folder's trailing slashes first, so ``//`` + ``tone.wav`` becomes
    ``/tone.wav``, a file at the disk's root: a movie or image next to the .blend was reported missing and never
    packed, and a sound strip gave a phantom ``/tone.wav`` (its file is packed through the sound data block).
    This handler replaces BAT's for scenes (``SC``), installed in BAT's table at run time (site-packages untouched):

    * the folder and the name are joined as Blender joins them (``BLI_path_join``: one separator, none added when
      the folder ends in one);
    * movie strips: their one file; image strips: every element's file (an image strip is a list of named files,
      not necessarily a numbered sequence, so nothing is guessed by globbing siblings);
    * sound strips: nothing. Blender plays and mixes a sound strip from its sound data block (``bSound.filepath``,
      which BAT traces, packed sounds included); the strip's own copy of the path is not read when rendering and
      may be stale or point at the original of a packed sound, so it must not be reported missing.

    The usage's block stays the ``StripData`` with its ``dir`` field, as in BAT, so a file that moves in the job
    tree gets the folder rewritten in the .blend copy. Idempotent.
    """
    blocks2assets._funcs_for_code[b"SC"] = _sequencer_assets


def _sequencer_assets(scene: blendfile.BlendFileBlock) -> Iterator[result.BlockUsage]:
    """The files of a scene's sequencer strips (meta strips included), each with its strip's name as its user."""
    editor = scene.get_pointer(b"ed")
    if editor is None:
        return
    for strip, kind in iterators.sequencer_strips(editor):
        if kind not in (cdefs.SEQ_TYPE_MOVIE, cdefs.SEQ_TYPE_IMAGE):
            continue
        data = strip.get_pointer(b"strip")
        elements = data.get_pointer(b"stripdata") if data is not None else None
        if data is None or elements is None:
            continue
        folder, folder_field = data.get(b"dir", return_field=True)
        strip_name = strip.get(b"name")
        if kind == cdefs.SEQ_TYPE_MOVIE:
            names = [elements.get(b"name", return_field=True)]
        else:  # dynamic_array reuses one block object: read each element's name as it comes
            names = [element.get(b"name", return_field=True) for element in iterators.dynamic_array(elements)]
        seen: set[bytes] = set()
        for basename, name_field in names:
            if not basename or basename in seen:
                continue
            seen.add(basename)
            yield result.BlockUsage(
                data,
                sequencer_path(folder, basename),
                path_dir_field=folder_field,
                path_base_field=name_field,
                # BAT drops usages with an equal (block, block_name): each file of a strip needs its own name.
                block_name=strip_name + _USAGE_DETAIL + basename,
            )


def sequencer_path(folder: bytes, name: bytes) -> bpathlib.BlendPath:
    """A strip's file path as Blender builds it from ``StripData.dir`` and ``StripElem.name``.

    ``//`` + ``a.wav`` is ``//a.wav`` (relative to the .blend), ``//media`` + ``a.png`` is ``//media/a.png``,
    ``C:\\clips\\`` + ``a.mp4`` gets no second separator (``C:/clips/a.mp4``: BlendPath writes slashes); an empty
    folder leaves the bare name.
    """
    if folder and not folder.endswith((b"/", b"\\")):
        folder += b"/"
    return bpathlib.BlendPath(folder + name)
