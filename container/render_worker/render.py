"""The ``render`` action: one chunk of the plan, with the .blend opened once and each frame in S3 as soon as it
exists.

Why this shape:

* The seed started Blender and loaded the file for every slice and uploaded only at the end, so an interrupted
  slice lost all of its work. Here the file is opened once per chunk, frames already in S3 are skipped (one
  listing of the frames prefix, not a HEAD per frame), and each frame is uploaded by a background thread while
  the next one renders: progress is visible at once and a retry renders only what is missing.
* A frame is rendered to a local file first and uploaded whole (PutObject is atomic), so a worker killed at any
  moment never leaves a half-written frame in S3.
* A frame counts as done only when it is whole: Blender says FINISHED even when the disk filled up under it, so
  each image is checked (:mod:`render_worker.verify`) and rendered again when it is not, then uploaded with its
  SHA-256 as the S3 checksum and as metadata. "Already in S3" means an object whose recorded digest matches its
  stored checksum; anything else at a frame key (a foreign or truncated file) is rendered again and overwritten.
* The file's own Python (registered text blocks, handlers, drivers) never runs: the worker opens the file with
  auto-execution off, whatever the file or Blender's preferences say.
* ``rendered frame N`` is logged once per frame, after its upload succeeded: the line means "rendered by this
  attempt and in S3". The local cloud's drill and the tests count these lines (``^rendered frame (\\d+)$``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from render_contract import exitcodes, failures, layout, output_names
from render_contract.errors import (
    BlendFileUnreadable,
    CorruptFrame,
    FramesFailed,
    FrameTimedOut,
    InvalidInput,
    MissingFrames,
    NoCamera,
    NoSpace,
    RenderFailed,
    RenderOnAwsError,
    SceneNotFound,
)
from render_contract.failures import FrameFailure
from render_contract.plan import STILL_FORMATS, Plan

from . import display, fetch, preview, s3io, signals, verify, watchdog

log = logging.getLogger("render_worker")
UPLOAD_THREADS = 4
FORMAT_OF_EXTENSION = {ext: fmt for fmt, ext in reversed(STILL_FORMATS.items())}
"""Extension -> the plain format that writes it (``exr`` -> ``OPEN_EXR``) when the file asks for another."""
NODE_DIR_PREFIX = "nodes-"
"""Per-frame work folders of the compositor's File Output nodes (``<work>/nodes-<frame>/<relative dir>/...``)."""
GPU_BACKENDS = ("OPTIX", "CUDA")
"""Tried in this order when ``RENDER_DEVICE=GPU``; bpy's wheel ships the kernels of both."""
RENDER_TRIES = 2
"""Renders of one frame in one attempt before a frame that keeps coming out corrupt fails the attempt (retried)."""
LOW_SPACE_BYTES = 64 << 20
"""Below this much free space, a missing or corrupt image is blamed on the disk (``NoSpace``), not on the frame."""


def open_blend(blend: Path, allow_scripts: bool = False) -> None:
    """Opens the .blend with the file's Python off unless ``allow_scripts``: a registered text block, a handler it
    would register and a Python-expression driver do not run. The farm renders files from artists it cannot vet,
    with credentials to the bucket; ``use_scripts`` is passed explicitly so no preference or default can turn
    auto-execution on. ``RuntimeError`` (an unreadable file) is the caller's to name."""
    import bpy

    bpy.ops.wm.open_mainfile(filepath=str(blend), load_ui=False, use_scripts=allow_scripts)
    if not allow_scripts and getattr(bpy.app, "autoexec_fail", False):
        log.info("the file's scripts were not run (auto-execution is off on the farm)")


def open_scene(blend: Path, plan: Plan) -> Any:
    """Opens the .blend as the farm does (:func:`open_blend`) and returns the plan's scene, made the window's scene
    when there is a window; an unreadable file is ``BlendFileUnreadable``, a missing scene ``SceneNotFound``."""
    import bpy

    try:
        open_blend(blend, allow_scripts=plan.allow_scripts)
    except RuntimeError as exc:
        raise BlendFileUnreadable(f"Blender cannot open {blend.name}: {str(exc).strip()}") from exc
    scene = bpy.data.scenes.get(plan.scene)
    if scene is None:
        names = ", ".join(s.name for s in bpy.data.scenes)
        raise SceneNotFound(f"scene {plan.scene!r} is not in {blend.name} (it has: {names})")
    window = bpy.context.window
    if window is not None:
        window.scene = scene
    return scene


def attach_frame(exc: Exception, frame: int | None) -> Exception:
    """Remembers which frame an error is about, for ``jobs/<id>/errors/`` (the named errors carry no frame)."""
    exc.frame = frame  # type: ignore[attr-defined]
    return exc


@dataclass
class ChunkReport:
    """What one attempt did, and where its time went (bench/frame_overhead.py reads the summary line)."""

    chunk: int
    frames: list[int]
    rendered: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, FrameFailure] = field(default_factory=dict)
    """Frames that failed for good in this Batch job (this attempt or an earlier one), by frame."""
    preview_s: float = 0.0
    list_s: float = 0.0
    fetch_s: float = 0.0
    open_s: float = 0.0
    render_s: float = 0.0
    upload_wait_s: float = 0.0
    total_s: float = 0.0

    def summary(self) -> str:
        return (
            f"chunk {self.chunk} timing: frames={len(self.frames)} rendered={len(self.rendered)} "
            f"skipped={len(self.skipped)} failed={len(self.failed)} list_s={self.list_s:.3f} "
            f"fetch_s={self.fetch_s:.3f} open_s={self.open_s:.3f} render_s={self.render_s:.3f} "
            f"preview_s={self.preview_s:.3f} upload_wait_s={self.upload_wait_s:.3f} "
            f"total_s={self.total_s:.3f}"
        )


def render_threads() -> int | None:
    """``RENDER_THREADS`` (the job's vCPUs, set by the job definition), or None for Blender's automatic count."""
    raw = os.environ.get("RENDER_THREADS", "").strip()
    if not raw:
        return None
    try:
        threads = int(raw)
    except ValueError:
        log.warning("ignoring RENDER_THREADS=%r (not a number): automatic thread count", raw)
        return None
    return threads if threads > 0 else None


class Renderer:
    """One open .blend, configured for the farm; renders frames to files in ``out_dir``."""

    def __init__(self, blend: Path, plan: Plan, out_dir: Path) -> None:
        import bpy  # imported here: `stitch` and the command line must not pay for Blender

        self.bpy = bpy
        self.out_dir = out_dir
        self.extension = plan.frame_extension
        scene = open_scene(blend, plan)
        if scene.camera is None:
            raise NoCamera(f"scene {plan.scene!r} has no active camera")
        self.scene = scene
        self._engine(plan.engine)
        self._output_format()
        self.file_outputs = file_output_nodes(scene)
        self.stitch_extension = plan.stitch_extension
        self._threads()
        if os.environ.get("RENDER_DEVICE", "CPU").strip().upper() == "GPU":
            self._gpu()

    def _engine(self, engine: str) -> None:
        render = self.scene.render
        if engine and render.engine != engine:
            try:
                render.engine = engine
                log.info("engine set to the plan's %s", engine)
            except TypeError:
                log.warning("plan's engine %r is unknown to this Blender; keeping the file's %s", engine, render.engine)
        if render.engine == "CYCLES":
            # Keeps scene data (BVH, images) between frames of one process: the point of chunking.
            render.use_persistent_data = True

    def _output_format(self) -> None:
        """Keeps the scene's own image settings when the plan writes its format (colour depth, colour mode, quality,
        EXR codec, a multilayer EXR's every view layer and pass); a movie or a format the worker cannot verify
        renders lossless PNG stills for the stitch (RGBA when the film is transparent, else RGB)."""
        settings = self.scene.render.image_settings
        media = getattr(settings, "media_type", "IMAGE")  # Blender 5 splits images, multilayer images and videos
        asked = settings.file_format
        if STILL_FORMATS.get(asked) == self.extension and media != "VIDEO":
            log.info("writing the scene's own %s settings (%s)", asked, describe_settings(settings))
        else:
            target = FORMAT_OF_EXTENSION.get(self.extension)
            if target is None:
                raise InvalidInput(
                    f"plan's frame extension {self.extension!r} is not one of {sorted(FORMAT_OF_EXTENSION)}"
                )
            if media != "IMAGE":
                settings.media_type = "IMAGE"
            settings.file_format = target
            if target == "PNG":
                settings.color_mode = "RGBA" if self.scene.render.film_transparent else "RGB"
            log.info("output format forced from %s to %s (%s)", asked, target, describe_settings(settings))
        render = self.scene.render
        render.use_file_extension = True
        render.use_overwrite = True  # the work folder is the worker's: F12's "skip existing" options do not apply
        render.use_placeholder = False

    def _threads(self) -> None:
        threads = render_threads()
        render = self.scene.render
        if threads:
            render.threads_mode = "FIXED"
            render.threads = threads
        else:
            render.threads_mode = "AUTO"
        log.info("render threads: %s", threads or f"auto ({render.threads})")

    def _gpu(self) -> None:
        """Cycles on OptiX, else CUDA; anything else is a clear ``RenderFailed`` rather than a silent CPU render.

        Not exercised by the tests (no GPU here); EEVEE and Workbench use the GPU through OpenGL/EGL anyway.
        """
        if self.scene.render.engine != "CYCLES":
            log.info("RENDER_DEVICE=GPU: %s picks its GPU itself", self.scene.render.engine)
            return
        prefs = self.bpy.context.preferences.addons["cycles"].preferences
        for backend in GPU_BACKENDS:
            try:
                prefs.compute_device_type = backend
            except TypeError:
                continue
            prefs.refresh_devices()
            devices = [d for d in prefs.devices if d.type == backend]
            if devices:
                for device in prefs.devices:
                    device.use = device.type == backend
                self.scene.cycles.device = "GPU"
                log.info("Cycles on %s: %s", backend, ", ".join(d.name for d in devices))
                return
        raise RenderFailed("RENDER_DEVICE=GPU but Cycles found no OptiX or CUDA device (driver missing?)")

    def render(self, frame: int) -> RenderedFrame:
        """Renders one frame to ``out_dir/<frame>.<ext>`` (and the File Output nodes' files for it) and checks every
        image is whole, rendering it again when one is not. A frame that stays corrupt is ``CorruptFrame``
        (retried), or ``NoSpace`` when the disk is full; a failure Blender reports is ``RenderFailed``."""
        why = ""
        for attempt in range(1, RENDER_TRIES + 1):
            rendered = self._render_once(frame)
            why = verify.file_defect(rendered.path, self.extension) or ""
            if not why and rendered.stitch_path is not None:
                why = verify.file_defect(rendered.stitch_path) or ""
            for relative, path in rendered.outputs.items():
                if why:
                    break
                defect = verify.file_defect(path) if path.suffix.lower().lstrip(".") in verify.CHECKS else None
                why = f"{relative}: {defect}" if defect else ""
            if not why:
                return rendered
            log.warning(
                "frame %d: an image Blender wrote is not whole (%s); render %d of %d",
                frame,
                why,
                attempt,
                RENDER_TRIES,
            )
        _check_space(self.out_dir, frame)
        raise attach_frame(
            CorruptFrame(f"frame {frame}: the image stays corrupt after {RENDER_TRIES} renders: {why}"), frame
        )

    def write_preview(self, frame: int) -> Path | None:
        """The flipbook's JPEG of the frame just rendered, or None (logged) when it cannot be made: a preview
        never fails a frame."""
        target = self.out_dir / f"{frame:0{layout.FRAME_DIGITS}d}.preview.jpg"
        try:
            return preview.write_preview(self.bpy, self.scene, target)
        except Exception as exc:
            log.warning("frame %d: no preview (%s: %s)", frame, type(exc).__name__, exc)
            return None

    def _render_once(self, frame: int) -> RenderedFrame:
        """Renders ``frame`` to the work folder. With File Output nodes it renders as F12 Render Animation does (a
        one-frame animation), so the nodes name their files for the frame exactly as in the artist's Blender;
        without, a still render (measured 30 % faster a frame with Cycles' persistent data, bpy 5.0.1)."""
        scene = self.scene
        nodes_dir = self.out_dir / f"{NODE_DIR_PREFIX}{frame}"
        shutil.rmtree(nodes_dir, ignore_errors=True)
        if self.file_outputs:
            pattern = "#" * layout.FRAME_DIGITS
            expected = self.out_dir / output_names.frame_name(pattern, frame, FORMAT_OF_EXTENSION[self.extension])
            for node, relative in self.file_outputs:
                set_node_directory(node, str(nodes_dir / relative) + os.sep)
            scene.render.filepath = str(self.out_dir / pattern)
            scene.frame_start = scene.frame_end = frame
            scene.frame_step = 1
        else:
            stem = self.out_dir / f"{frame:0{layout.FRAME_DIGITS}d}"
            expected = stem.with_name(f"{stem.name}.{self.extension}")
            scene.render.filepath = str(stem)
        expected.unlink(missing_ok=True)
        try:
            if self.file_outputs:
                result = self.bpy.ops.render.render(animation=True, scene=scene.name)
            else:
                scene.frame_set(frame)
                result = self.bpy.ops.render.render(write_still=True, scene=scene.name)
        except RuntimeError as exc:
            raise attach_frame(RenderFailed(f"frame {frame}: {str(exc).strip()}"), frame) from exc
        if "FINISHED" not in result:
            raise attach_frame(RenderFailed(f"frame {frame}: Blender returned {sorted(result)}"), frame)
        if not expected.is_file() or expected.stat().st_size == 0:
            _check_space(self.out_dir, frame)
            raise attach_frame(RenderFailed(f"frame {frame}: Blender wrote no image at {expected.name}"), frame)
        outputs = {
            path.relative_to(nodes_dir).as_posix(): path for path in sorted(nodes_dir.rglob("*")) if path.is_file()
        }  # empty without File Output nodes (the folder does not exist)
        stitch = None
        if self.stitch_extension != self.extension:  # a multilayer EXR: its composite as PNG, for the stitch
            stitch = display.to_display(
                scene, expected, expected.with_name(f"{expected.stem}.{self.stitch_extension}"), RenderFailed
            )
        return RenderedFrame(frame, expected, outputs, nodes_dir, stitch)


@dataclass
class RenderedFrame:
    """One rendered frame: its main image and the File Output nodes' files (relative path -> local file)."""

    frame: int
    path: Path
    outputs: dict[str, Path]
    outputs_dir: Path
    stitch_path: Path | None = None
    """A multilayer EXR frame's composite as PNG (``frames/<NNNNNN>.png``), for the stitch."""

    def cleanup(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.stitch_path is not None:
            self.stitch_path.unlink(missing_ok=True)
        shutil.rmtree(self.outputs_dir, ignore_errors=True)


def describe_settings(settings: Any) -> str:
    """``PNG 16-bit RGBA``, ``JPEG quality 90``, ``OPEN_EXR_MULTILAYER 32-bit RGBA PIZ``: for the worker's log."""
    parts = [str(settings.file_format)]
    if getattr(settings, "color_depth", ""):
        parts.append(f"{settings.color_depth}-bit")
    parts.append(str(settings.color_mode))
    if settings.file_format in ("JPEG", "WEBP"):
        parts.append(f"quality {settings.quality}")
    if settings.file_format.startswith("OPEN_EXR"):
        parts.append(str(settings.exr_codec))
    return " ".join(parts)


def compositor_tree(scene: Any) -> Any:
    """The compositor's node tree: ``scene.compositing_node_group`` in Blender 5, ``scene.node_tree`` in 4.x."""
    if hasattr(scene, "compositing_node_group"):
        return scene.compositing_node_group
    return scene.node_tree if getattr(scene, "use_nodes", False) else None


def node_directory(node: Any) -> str:
    """A File Output node's folder: ``directory`` in Blender 5, ``base_path`` in 4.x."""
    return str(node.directory if hasattr(node, "directory") else node.base_path)


def set_node_directory(node: Any, directory: str) -> None:
    if hasattr(node, "directory"):
        node.directory = directory
    else:
        node.base_path = directory


def file_output_nodes(scene: Any) -> list[tuple[Any, str]]:
    """The compositor's unmuted File Output nodes with their folder relative to the .blend (``//comp/`` ->
    ``comp``), as :func:`render_contract.output_names.node_relative_dir` files them under ``outputs/``."""
    tree = compositor_tree(scene)
    if tree is None or not scene.render.use_compositing:
        return []
    found = []
    for node in tree.nodes:
        if node.bl_idname == "CompositorNodeOutputFile" and not node.mute:
            directory = node_directory(node)
            found.append((node, output_names.node_relative_dir(directory)))
            log.info("File Output node %r writes to %s: its files go to outputs/", node.name, directory)
    return found


def _check_space(directory: Path, frame: int) -> None:
    """Blender reports a failed image write only on its console; a nearly full disk is the likely cause."""
    free = shutil.disk_usage(directory).free
    if free < LOW_SPACE_BYTES:
        raise attach_frame(NoSpace(f"frame {frame}: the image was not written whole; {free >> 20} MiB free"), frame)


def batch_job() -> str:
    """The Batch job this attempt belongs to (an array child's parent): the same for every retry of it, new for a
    resume. Recorded with each failed frame, so a retry skips what its job already found failing."""
    return os.environ.get("AWS_BATCH_JOB_ID", "").split(":", 1)[0]


def render_chunk(plan: Plan, index: int, s3: Any, bucket: str, workdir: Path | None = None) -> ChunkReport:
    """Renders every frame of chunk ``index`` not yet in S3. A frame that fails for good is recorded in
    ``failed/`` and the chunk goes on; at the end, ``FramesFailed`` names those frames. Raises ``Interrupted`` on a
    stop request (after the uploads in flight finished), a named error on a deterministic whole-file failure."""
    started = time.perf_counter()
    report = ChunkReport(chunk=index, frames=list(plan.chunk_frames(index)))
    ext = plan.frame_extension

    t = time.perf_counter()
    present, untrusted = s3io.verified_frames(s3, bucket, plan.job_id, ext, report.frames)
    recorded = s3io.failed_frames(s3, bucket, plan.job_id, set(report.frames) - present)
    report.list_s = time.perf_counter() - t
    this_job = batch_job()
    report.failed = {frame: failure for frame, failure in recorded.items() if failure.batch_job == this_job}
    todo = [f for f in report.frames if f not in present and f not in report.failed]
    for frame in report.frames:
        if frame in present:
            report.skipped.append(frame)
            log.info("skipped frame %d (already in S3)", frame)
        elif frame in report.failed:
            log.info("skipped frame %d (it failed earlier in this Batch job: %s)", frame, recorded[frame].error)
        elif frame in untrusted:
            log.warning(
                "frame %d in S3 has no matching recorded SHA-256 (foreign or corrupt): rendering it again", frame
            )
    log.info(
        "chunk %d: %d frames (%s), %d to render",
        index,
        len(report.frames),
        s3io.describe_frames(report.frames),
        len(todo),
    )

    if todo:
        with tempfile.TemporaryDirectory(prefix="render-", dir=workdir) as tmp:
            _render_frames(plan, s3, bucket, Path(tmp), todo, report, set(recorded))

    t = time.perf_counter()
    missing = sorted(set(report.frames) - s3io.verified_frames(s3, bucket, plan.job_id, ext, report.frames)[0])
    report.list_s += time.perf_counter() - t
    report.total_s = time.perf_counter() - started
    log.info("%s", report.summary())
    unexplained = [frame for frame in missing if frame not in report.failed]
    if unexplained and signals.STOP.is_set():
        raise signals.Interrupted(f"stopped with {len(unexplained)} frames of chunk {index} left to render")
    if unexplained:  # never report success with a frame missing
        raise attach_frame(
            MissingFrames(f"chunk {index} finished but frames are not in S3: {s3io.describe_frames(unexplained)}"),
            unexplained[0],
        )
    if report.failed:
        raise attach_frame(FramesFailed(failures.describe(list(report.failed.values()))), min(report.failed))
    return report


PER_FRAME_FAILURES = (RenderFailed, MemoryError)
"""A frame that fails with these fails alone: the chunk goes on. ``CorruptFrame`` and ``NoSpace`` are retried on
another host instead, and a whole-file failure (``NoCamera``, ...) happens before the first frame."""


def frame_failure(frame: int, exc: BaseException) -> FrameFailure:
    if isinstance(exc, RenderOnAwsError):
        name, message = exc.name, exc.message
    else:
        name, message = RenderFailed.__name__, f"out of memory ({type(exc).__name__}: {exc})"
    return FrameFailure(frame, name, failures.without_frame_prefix(" ".join(message.split()), frame), batch_job())


def _render_frames(
    plan: Plan, s3: Any, bucket: str, tmp: Path, todo: list[int], report: ChunkReport, recorded: set[int]
) -> None:
    """Renders ``todo`` in order; ``recorded``: frames with a failure record, deleted once the frame is in S3."""
    signals.check()
    t = time.perf_counter()
    blend = fetch.materialise(s3, plan.input_uri, plan.main_file, tmp / "input")
    report.fetch_s = time.perf_counter() - t
    signals.check()

    out_dir = tmp / "frames"
    out_dir.mkdir()
    t = time.perf_counter()
    renderer = Renderer(blend, plan, out_dir)
    report.open_s = time.perf_counter() - t

    def upload(rendered: RenderedFrame, preview_path: Path | None) -> None:
        """The preview first (a frame in S3 then has its preview: the panel asks for no listing), then the File
        Output nodes' files, the main image last: a frame in S3 means all of it is there."""
        frame = rendered.frame
        if preview_path is not None:
            try:
                s3io.upload(s3, preview_path, bucket, layout.preview_key(plan.job_id, frame), "image/jpeg")
            except Exception as exc:  # a preview is a convenience: the frame still counts
                log.warning("frame %d: preview not uploaded: %s", frame, exc)
            preview_path.unlink(missing_ok=True)
        for relative, output in rendered.outputs.items():
            key = layout.output_key(plan.job_id, relative)
            s3io.upload_frame(s3, output, bucket, key, s3io.sha256_file(output))
        if rendered.stitch_path is not None:
            key = layout.frame_key(plan.job_id, frame, plan.stitch_extension)
            s3io.upload_frame(s3, rendered.stitch_path, bucket, key, s3io.sha256_file(rendered.stitch_path))
        path = rendered.path
        digest = s3io.sha256_file(path)  # of the bytes just verified: S3 refuses the PUT if the body differs
        s3io.upload_frame(s3, path, bucket, layout.frame_key(plan.job_id, frame, plan.frame_extension), digest)
        rendered.cleanup()
        if frame in recorded:  # an inert record otherwise (a frame in S3 never counts as failed), so only warn
            try:
                s3.delete_object(Bucket=bucket, Key=layout.failed_key(plan.job_id, frame))
            except Exception as exc:
                log.warning("frame %d: its old failure record stays (%s)", frame, exc)
        report.rendered.append(frame)
        log.info("rendered frame %d", frame)

    def record(failure: FrameFailure) -> None:
        s3.put_object(
            Bucket=bucket,
            Key=layout.failed_key(plan.job_id, failure.frame),
            Body=failure.to_json(),
            ContentType="application/json",
        )

    pending: list[Future[None]] = []
    pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="upload")
    limit = watchdog.frame_time_limit()

    def timed_out(frame: int) -> None:
        """The watchdog's thread, while Blender still renders ``frame``: record it, finish the uploads, restart."""
        message = f"rendered longer than the per-frame time limit of {limit:g} s ({watchdog.ENV})"
        log.error("frame %d: %s: recorded as failed; restarting for the chunk's other frames", frame, message)
        try:
            record(FrameFailure(frame, FrameTimedOut.__name__, message, batch_job()))
        except Exception as exc:
            log.error("frame %d: no failure record (%s): exiting %d", frame, exc, exitcodes.EXIT_INTERRUPTED)
            os._exit(exitcodes.EXIT_INTERRUPTED)
        pool.shutdown(wait=True)  # the frames rendered before this one reach S3
        shutil.rmtree(tmp, ignore_errors=True)  # exec runs no cleanup
        watchdog.restart_worker()

    guard = watchdog.FrameWatchdog(limit, timed_out)
    try:
        for frame in todo:
            if signals.STOP.is_set():
                break
            t = time.perf_counter()
            try:
                with guard.watch(frame):
                    rendered = renderer.render(frame)
            except PER_FRAME_FAILURES as exc:
                failure = report.failed[frame] = frame_failure(frame, exc)
                log.error("frame %d failed (%s: %s); going on with the chunk", frame, failure.error, failure.message)
                pending.append(pool.submit(record, failure))
                continue
            elapsed = time.perf_counter() - t
            report.render_s += elapsed
            t = time.perf_counter()
            preview_path = renderer.write_preview(frame)
            report.preview_s += time.perf_counter() - t
            log.info("frame %d: render %.3f s", frame, elapsed)
            pending.append(pool.submit(upload, rendered, preview_path))
            for future in pending:  # surface a failed upload now rather than after the whole chunk
                if future.done() and future.exception() is not None:
                    future.result()
    finally:
        t = time.perf_counter()
        pool.shutdown(wait=True)  # every frame rendered so far reaches S3, whatever happens next
        report.upload_wait_s = time.perf_counter() - t
    for future in pending:
        future.result()
    if len(report.rendered) + len(set(todo) & set(report.failed)) < len(todo):
        signals.check()
