"""The ``stitch`` action: every planned frame, in plan order, into one H.264 video at the plan's exact frame rate.

The seed stitched at a fixed 25 fps in yuv444 (which many players refuse) and stopped silently at the first
missing frame. Here a missing frame fails the job by name (``MissingFrames``), the frames are numbered 0..n-1
locally so FFmpeg sees one contiguous sequence whatever the frame step, ``-framerate`` is the plan's exact
fraction (30000/1001 stays 30000/1001), odd sizes get one pixel of padding (yuv420p needs even dimensions), and
``+faststart`` lets the video play while it downloads. The frames stay in S3.

Every frame is checked before FFmpeg sees it: its bytes must hash to the SHA-256 the worker recorded and S3
stored, and its structure must be whole (:mod:`render_worker.verify`). A frame that is not fails the stitch by
name (``CorruptFrame``, listing every such frame) rather than putting a smear or a truncated image in the video.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from render_contract import layout
from render_contract.errors import CorruptFrame, MissingFrames, NoSpace, StitchFailed
from render_contract.plan import Plan

from . import s3io, signals, verify
from .render import attach_frame

log = logging.getLogger("render_worker")
PARALLEL_DOWNLOADS = 16
X264_PRESET = "medium"
X264_CRF = "18"


def ffmpeg_binary() -> str:
    """``FFMPEG_BINARY``, else ``ffmpeg`` on PATH (Debian's, in the container), else imageio-ffmpeg's (local runs)."""
    configured = os.environ.get("FFMPEG_BINARY", "").strip()
    if configured:
        return configured
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise StitchFailed("no FFmpeg: set FFMPEG_BINARY, put ffmpeg on PATH or install imageio-ffmpeg") from exc


def ffmpeg_command(binary: str, pattern: Path, fps_num: int, fps_den: int, out: Path) -> list[str]:
    """The one FFmpeg command line of the project (tests read its output with PyAV)."""
    return [
        binary,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-framerate",
        f"{fps_num}/{fps_den}",
        "-start_number",
        "0",
        "-i",
        str(pattern),
        "-vf",
        "pad=w=ceil(iw/2)*2:h=ceil(ih/2)*2,format=yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        X264_PRESET,
        "-crf",
        X264_CRF,
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        str(out),
    ]


def check_frames(plan: Plan, s3: Any, bucket: str) -> list[int]:
    """The planned frames, in order, after checking every one is in S3 (one listing)."""
    frames = plan.frames
    present = s3io.list_frames(s3, bucket, plan.job_id, plan.stitch_extension)
    missing = [f for f in frames if f not in present]
    if missing:
        raise attach_frame(
            MissingFrames(
                f"{len(missing)} of {len(frames)} planned frames are not in S3: {s3io.describe_frames(missing)}"
            ),
            missing[0],
        )
    return frames


def stitch(plan: Plan, s3: Any, bucket: str, workdir: Path | None = None) -> str:
    """Makes and uploads the video; returns its key."""
    frames = check_frames(plan, s3, bucket)
    ext = plan.stitch_extension
    key = layout.video_key(plan.job_id, plan.job_name)
    if plan.video_key and plan.video_key != key:
        log.warning("plan's video_key %s differs from the layout's %s; using the layout's", plan.video_key, key)
    with tempfile.TemporaryDirectory(prefix="stitch-", dir=workdir) as tmp:
        seq = Path(tmp) / "seq"
        seq.mkdir()

        def fetch(item: tuple[int, int]) -> str | None:
            position, frame = item
            signals.check()
            local = seq / f"{position:06d}.{ext}"
            why = s3io.download_verified(s3, bucket, layout.frame_key(plan.job_id, frame, ext), local)
            return why or verify.file_defect(local, ext)

        with ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS) as pool:
            defects = dict(zip(frames, pool.map(fetch, enumerate(frames)), strict=True))
        corrupt = {frame: why for frame, why in defects.items() if why}
        if corrupt:
            listed = "; ".join(f"{frame} ({why})" for frame, why in sorted(corrupt.items())[:10])
            more = f"; ... ({len(corrupt)} frames)" if len(corrupt) > 10 else ""
            raise attach_frame(
                CorruptFrame(f"{len(corrupt)} of {len(frames)} frames are corrupt: {listed}{more}"), min(corrupt)
            )
        log.info("downloaded and verified %d frames (%s)", len(frames), s3io.describe_frames(frames))
        signals.check()

        out = Path(tmp) / "video.mp4"
        command = ffmpeg_command(ffmpeg_binary(), seq / f"%06d.{ext}", plan.fps_num, plan.fps_den, out)
        log.info("ffmpeg: %s", " ".join(command))
        _run_ffmpeg(command)
        if not out.is_file() or out.stat().st_size == 0:
            raise StitchFailed("FFmpeg exited 0 but wrote no video")
        s3io.upload(s3, out, bucket, key, content_type="video/mp4")
    log.info("stitched %d frames at %d/%d fps into s3://%s/%s", len(frames), plan.fps_num, plan.fps_den, bucket, key)
    return key


def _run_ffmpeg(command: list[str]) -> None:
    """Runs FFmpeg; a stop request terminates it (stitching is idempotent, the retry starts over)."""
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        except OSError as exc:
            raise StitchFailed(f"cannot run FFmpeg {command[0]}: {exc}") from exc
        while True:
            try:
                code = process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if signals.STOP.is_set():
                    process.terminate()
                    process.wait()
                    raise signals.Interrupted("stopped while FFmpeg was running") from None
        if code != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip()[-2000:]
            if "No space left on device" in tail:
                raise NoSpace(f"the disk filled up while FFmpeg wrote the video: {tail.splitlines()[-1]}")
            raise StitchFailed(f"FFmpeg exited {code}: {tail}")
