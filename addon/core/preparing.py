"""Preparing a submission: what the job will upload, known before anything is uploaded (no network here)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from render_contract.errors import InputNotFound
from render_contract.execution_input import ExecutionInput
from render_contract.manifest import Manifest
from render_contract.runtimes import parse_version, resolve_override

from . import cas


@dataclass(frozen=True)
class SubmitRequest:
    """What the artist asked for: a file and the execution input's optional fields."""

    blend: Path
    job_name: str | None = None
    frames_per_job: str = "auto"
    frame_start: int | None = None
    frame_end: int | None = None
    frame_step: int | None = None
    scene: str | None = None
    allow_scripts: bool = False
    """Run the file's Python scripts and Python drivers on the farm for this job (the artist's consent)."""
    blender_version: str | None = None
    """The artist's Blender (``bpy.app.version`` as ``"4.2.3"``): the frame counter checks it against the file."""
    blender_runtime: str | None = None
    """Render with this runtime series (``"4.5"``) instead of the file's own."""

    def __post_init__(self) -> None:
        """An override the farm cannot honour is refused now, before anything is uploaded."""
        if self.blender_runtime is not None:
            resolve_override(self.blender_runtime)
        if self.blender_version is not None:
            parse_version(self.blender_version, "blenderVersion")

    origin: Path | None = None
    """The artist's .blend when ``blend`` is a copy saved elsewhere (the add-on's): disk caches and bake folders
    that Blender finds next to the artist's file are found there (see :func:`.packing.pack_blend`)."""

    def execution_input(self, job_id: str, bucket: str, job_name: str) -> ExecutionInput:
        return ExecutionInput.for_job(
            bucket,
            job_id,
            job_name=job_name,
            frames_per_job=None if self.frames_per_job == "auto" else int(self.frames_per_job),
            frame_start=self.frame_start,
            frame_end=self.frame_end,
            frame_step=self.frame_step,
            scene=self.scene,
            allow_scripts=self.allow_scripts,
            blender_version=self.blender_version,
            blender_runtime=self.blender_runtime,
        )


@dataclass(frozen=True)
class MissingFile:
    """A file the scene refers to that is not on the artist's disk (it would render pink or empty)."""

    path: str
    used_by: str


@dataclass
class PreparedJob:
    """What a submission will upload.

    ``files`` maps each path relative to the job's root (as the worker lays it out) to its content hash; the
    main .blend is ``main``. ``missing`` lists what the scene needs but the disk lacks: the artist decides.
    """

    request: SubmitRequest
    job_name: str
    main: str
    files: dict[str, cas.StoredFile]
    missing: list[MissingFile] = field(default_factory=list)
    work_dir: Path | None = None
    """A temporary folder the preparation made (rewritten copies); removed by :meth:`cleanup`."""
    unbaked: list[str] = field(default_factory=list)
    """Simulations of the rendered scene that are not baked (``UnbakedSimulation``): a warning, not a stop."""

    @property
    def total_bytes(self) -> int:
        return sum(stored.size for stored in {f.sha256: f for f in self.files.values()}.values())

    def manifest(self) -> Manifest:
        """The job's manifest, checked by the contract's rule: what the farm would refuse is refused here."""
        return Manifest(self.main, {path: stored.sha256 for path, stored in sorted(self.files.items())})

    def cleanup(self) -> None:
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None


def prepare(request: SubmitRequest) -> PreparedJob:
    """Finds and hashes everything the .blend needs; touches no network and never modifies the artist's files.

    blender-asset-tracer lays out the job tree (:mod:`.packing`): the artist's assets are hashed where they are
    (through the local hash cache, so an unchanged file costs a ``stat``), and only .blend files whose paths had to
    be rewritten are written, as copies under ``work_dir``.
    """
    from . import hashcache, packing, simulations  # blender-asset-tracer: imported only when something is packed

    blend = Path(request.blend)
    if not blend.is_file():
        raise InputNotFound(f"no such .blend file: {blend}")
    work_dir = Path(tempfile.mkdtemp(prefix="render-on-aws-pack-"))
    unbaked: list[simulations.Simulation] = []

    def check_simulations(bfile: Any) -> None:
        folder = Path(request.origin or blend).absolute().parent
        unbaked.extend(simulations.unbaked_simulations(bfile, folder, request.scene, request.frame_end))

    try:
        tree = packing.pack_blend(blend, work_dir, inspect=check_simulations, origin=request.origin)
        cache = hashcache.HashCache()
        artist_files = [source for source in tree.files.values() if not source.is_relative_to(work_dir)]
        stored = cas.hash_files(artist_files, cache)
        cache.save()
        # Rewritten copies are new temporary files every time: hashing them is cheap, caching them pointless.
        stored.update(cas.hash_files(source for source in tree.files.values() if source.is_relative_to(work_dir)))
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return PreparedJob(
        request,
        request.job_name or blend.stem,
        tree.main,
        {rel: stored[source] for rel, source in tree.files.items()},
        [MissingFile(item.path, item.used_by) for item in tree.missing],
        work_dir,
        [simulation.describe() for simulation in unbaked],
    )
