"""The ``stitch`` action: every planned frame, in plan order, into one video at the plan's exact frame rate.

The seed stitched at a fixed 25 fps in yuv444 (which many players refuse) and stopped silently at the first
missing frame. Here a missing frame fails the job by name (``MissingFrames``), the frames are numbered 0..n-1
locally so FFmpeg sees one contiguous sequence whatever the frame step, ``-framerate`` is the plan's exact
fraction (30000/1001 stays 30000/1001), odd sizes get one pixel of padding (4:2:0 needs even dimensions), and
``+faststart`` lets an MP4/MOV play while it downloads. The frames stay in S3.

Every frame is checked before FFmpeg sees it: its bytes must hash to the SHA-256 the worker recorded and S3
stored, and its structure must be whole (:mod:`render_worker.verify`). A frame that is not fails the stitch by
name (``CorruptFrame``, listing every such frame) rather than putting a smear or a truncated image in the video.

What the video is depends on the scene's output (the plan's ``video_container``, read by the frame counter):

* a movie (FFmpeg output): the farm rendered lossless stills, and the stitch writes the scene's own movie: its
  container, codec, quality (CRF or bitrate), keyframe interval, speed preset, and its sound (the sequencer's
  strips and speakers mixed down by Blender, with the scene's audio codec, bitrate, channels and rate), under the
  name the plan gives (the output path's name with the container's extension). The mapping of Blender's settings
  to FFmpeg is :mod:`render_worker.movie`;
* stills: a preview, H.264 in MP4 (``<jobName>.mp4``), from display-referred images: scene-linear frames (EXR)
  are converted with the scene's view transform, look, exposure, gamma and display device first
  (:mod:`render_worker.display`), so an EXR job's video looks like the Render window.

Why the worker reads the settings with bpy rather than the frame counter with blender-asset-tracer: the exact
colour management needs Blender's OpenColorIO anyway, the mixdown needs Blender's audio engine, and RNA names
the settings the same way from Blender 4.2 to 5.x while the DNA behind them moves (5.0 put movies under
``image_settings.media_type == 'VIDEO'``). Opening the .blend costs the stitch a few seconds, only for movie and
scene-linear jobs; a PNG stills job never imports bpy. The frame counter reads just what names the video (the
container and the output path), since the clients learn the video's key from the plan.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from render_contract import layout
from render_contract.errors import (
    CorruptFrame,
    MissingFrames,
    NoSpace,
    StitchFailed,
)
from render_contract.plan import MOVIE_CONTAINERS, PREVIEW_VIDEO_EXTENSION, Plan

from . import display, fetch, movie, s3io, signals, verify
from .render import attach_frame, open_scene

log = logging.getLogger("render_worker")
PARALLEL_DOWNLOADS = 16
MEDIA_SUFFIXES = frozenset(
    {".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".aac", ".m4a", ".aif", ".aiff", ".ac3", ".wma"}
    | {".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".flv", ".dv", ".m4v", ".mxf"}
)
"""The manifest files a movie stitch downloads besides the .blend: what a sound strip or a speaker can play."""
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
    "dv": "video/x-dv",
    "flv": "video/x-flv",
    "mpg": "video/mpeg",
    "ogv": "video/ogg",
}


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


def video_key(plan: Plan) -> str:
    """The plan's video key (the frame counter named it: clients download what the summary's ``videoUri`` says),
    or the layout's ``<jobName>.mp4`` when the plan's is not a file directly inside the job's folder."""
    key = plan.video_key
    prefix = layout.job_prefix(plan.job_id)
    name = key.removeprefix(prefix)
    if key.startswith(prefix) and name and "/" not in name and "." in name:
        return key
    fallback = layout.video_key(plan.job_id, plan.job_name)
    log.warning("plan's video_key %r is not inside %s; using %s", key, prefix, fallback)
    return fallback


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


def opens_blend(plan: Plan) -> bool:
    """Whether the stitch opens the .blend with bpy: a movie output (its settings and sound) or scene-linear frames
    (made display-referred with the scene's colour management). A PNG stills job never imports Blender."""
    return bool(plan.video_container) or display.is_scene_linear(plan.stitch_extension)


def needs_plan_blender(plan: Plan) -> bool:
    """Whether the stitch must run under the plan's Blender runtime: to make scene-linear frames display-referred
    with that Blender's colour management, as the artist's Render window shows them. A movie job's frames are
    display-referred PNGs already (rendered by the plan's Blender); its stitch only reads the FFmpeg settings and
    mixes the sound down, which the image's default Blender does for files of every series, and which bpy 4.2's
    wheel cannot do (it is built without Blender's audio library)."""
    return display.is_scene_linear(plan.stitch_extension) and not plan.video_container


def stitch(plan: Plan, s3: Any, bucket: str, workdir: Path | None = None) -> str:
    """Makes and uploads the video; returns its key."""
    frames = check_frames(plan, s3, bucket)
    ext = plan.stitch_extension
    key = video_key(plan)
    extension = PurePosixPath(key).suffix.lstrip(".") or PREVIEW_VIDEO_EXTENSION
    with tempfile.TemporaryDirectory(prefix="stitch-", dir=workdir) as tmp:
        work = Path(tmp)
        seq = _download_frames(plan, s3, bucket, frames, work / "seq")
        pattern = seq / f"%06d.{ext}"
        settings, audio = movie.PREVIEW, None
        if opens_blend(plan):
            scene = _open_scene(plan, s3, work)
            if display.is_scene_linear(ext):
                pattern = _display_frames(scene, seq, len(frames), ext, work / "display")
            if plan.video_container:
                settings = scene_movie_settings(scene, plan.video_container)
                scale = plan.resolution_percentage / 100
                movie.check_size(settings, int(plan.resolution_x * scale), int(plan.resolution_y * scale))
                audio = _sound(scene, plan, settings, work / "mixdown.wav")
        signals.check()
        out = work / f"video.{extension}"
        command = movie.command(ffmpeg_binary(), pattern, plan.fps_num, plan.fps_den, settings, out, audio)
        log.info("ffmpeg: %s", " ".join(command))
        _run_ffmpeg(command)
        if not out.is_file() or out.stat().st_size == 0:
            raise StitchFailed("FFmpeg exited 0 but wrote no video")
        s3io.upload(s3, out, bucket, key, content_type=CONTENT_TYPES.get(extension, "application/octet-stream"))
    log.info(
        "stitched %d frames at %d/%d fps (%s %s%s) into s3://%s/%s",
        len(frames),
        plan.fps_num,
        plan.fps_den,
        settings.container,
        settings.codec,
        f", {settings.audio_codec} audio" if audio else ", no audio",
        bucket,
        key,
    )
    return key


def _download_frames(plan: Plan, s3: Any, bucket: str, frames: list[int], seq: Path) -> Path:
    """Every frame, verified, as ``seq/<position>.<ext>`` (positions 0..n-1 in plan order)."""
    ext = plan.stitch_extension
    seq.mkdir()

    def fetch_one(item: tuple[int, int]) -> str | None:
        position, frame = item
        signals.check()
        local = seq / f"{position:06d}.{ext}"
        why = s3io.download_verified(s3, bucket, layout.frame_key(plan.job_id, frame, ext), local)
        return why or verify.file_defect(local, ext)

    with ThreadPoolExecutor(max_workers=PARALLEL_DOWNLOADS) as pool:
        defects = dict(zip(frames, pool.map(fetch_one, enumerate(frames)), strict=True))
    corrupt = {frame: why for frame, why in defects.items() if why}
    if corrupt:
        listed = "; ".join(f"{frame} ({why})" for frame, why in sorted(corrupt.items())[:10])
        more = f"; ... ({len(corrupt)} frames)" if len(corrupt) > 10 else ""
        raise attach_frame(
            CorruptFrame(f"{len(corrupt)} of {len(frames)} frames are corrupt: {listed}{more}"), min(corrupt)
        )
    log.info("downloaded and verified %d frames (%s)", len(frames), s3io.describe_frames(frames))
    signals.check()
    return seq


def _is_media(rel: str) -> bool:
    return PurePosixPath(rel).suffix.lower() in MEDIA_SUFFIXES


def _open_scene(plan: Plan, s3: Any, work: Path) -> Any:
    """The plan's scene in the job's .blend (with its sound and movie files, not its textures), opened as the
    render worker opens it (the file's Python off unless the job allows it)."""
    blend = fetch.materialise(s3, plan.input_uri, plan.main_file, work / "input", keep=_is_media)
    return open_scene(blend, plan)


def _display_frames(scene: Any, seq: Path, count: int, ext: str, out: Path) -> Path:
    """Scene-linear frames as display-referred PNGs (the scene's view), numbered as ``seq``; returns the pattern."""
    out.mkdir()
    log.info("converting %d %s frames to display-referred PNG: %s", count, ext, display.describe_view(scene))
    for position in range(count):
        signals.check()
        display.to_display(scene, seq / f"{position:06d}.{ext}", out / f"{position:06d}.png")
    return out / "%06d.png"


def is_movie_output(scene: Any) -> bool:
    """The scene writes a movie: ``media_type == 'VIDEO'`` (Blender 5) or ``file_format == 'FFMPEG'`` (4.2+)."""
    settings = scene.render.image_settings
    return getattr(settings, "media_type", "") == "VIDEO" or settings.file_format == "FFMPEG"


def scene_movie_settings(scene: Any, container: str) -> movie.MovieSettings:
    """The scene's ``render.ffmpeg`` settings (the same RNA in Blender 4.2 to 5.x). ``container`` is the plan's:
    the video's key already carries its extension, so the muxer must agree with it."""
    ffmpeg, image = scene.render.ffmpeg, scene.render.image_settings
    if not is_movie_output(scene):
        log.warning("the plan says the output is a %s movie but the scene's is %s", container, image.file_format)
    if ffmpeg.format != container:
        log.warning("the scene's container %s differs from the plan's %s; writing the plan's", ffmpeg.format, container)
    depth = str(getattr(image, "color_depth", "8"))
    settings = movie.MovieSettings(
        container=container if container in MOVIE_CONTAINERS else "MPEG4",
        codec=ffmpeg.codec,
        crf=ffmpeg.constant_rate_factor,
        preset=ffmpeg.ffmpeg_preset,
        gop=int(ffmpeg.gopsize),
        max_b_frames=int(ffmpeg.max_b_frames) if ffmpeg.use_max_b_frames else None,
        video_bitrate=int(ffmpeg.video_bitrate),
        minrate=int(ffmpeg.minrate),
        maxrate=int(ffmpeg.maxrate),
        buffersize=int(ffmpeg.buffersize),
        prores_profile=str(getattr(ffmpeg, "ffmpeg_prores_profile", "422_STD")),
        color_depth=int(depth) if depth in ("10", "12") else 8,
        alpha=image.color_mode == "RGBA",
        audio_codec=ffmpeg.audio_codec,
        audio_bitrate=int(ffmpeg.audio_bitrate),
        audio_channels=ffmpeg.audio_channels,
        audio_mixrate=int(ffmpeg.audio_mixrate),
        audio_volume=float(ffmpeg.audio_volume),
    )
    log.info("the scene's movie: %s", settings)
    return settings


def sound_sources(scene: Any, _seen: frozenset[str] = frozenset()) -> list[Any]:
    """What the scene's mixdown plays: unmuted sound strips of its sequencer (``strips_all`` in Blender 5,
    ``sequences_all`` before), speakers with a sound, and the sound of scenes its scene strips show."""
    sources: list[Any] = []
    editor = scene.sequence_editor
    if editor is not None:
        strips = list(editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all)
        sources += [strip for strip in strips if strip.type == "SOUND" and not strip.mute and strip.sound]
        for strip in strips:
            inner = getattr(strip, "scene", None) if strip.type == "SCENE" and not strip.mute else None
            if inner is not None and inner.name not in _seen | {scene.name}:
                sources += sound_sources(inner, _seen | {scene.name})
    sources += [ob for ob in scene.objects if ob.type == "SPEAKER" and ob.data.sound and not ob.data.muted]
    return sources


def _sound(scene: Any, plan: Plan, settings: movie.MovieSettings, target: Path) -> Path | None:
    """The scene's sound over the planned frames, mixed down by Blender to a float WAV at the scene's rate and
    channels; None without an audio codec or anything to play (no audio stream, as the artist would expect)."""
    if not settings.has_audio_codec:
        return None
    sources = sound_sources(scene)
    if not sources:
        log.info("audio codec %s but no sound strip or speaker: no audio stream", settings.audio_codec)
        return None
    import bpy

    for source in sources:
        sound = source.sound if hasattr(source, "sound") else source.data.sound
        path = Path(bpy.path.abspath(sound.filepath, library=sound.library))
        if sound.packed_file is None and not path.is_file():
            log.warning("%s plays %s, which is not on the farm (not packed, not uploaded): silent", source.name, path)
    scene.frame_start, scene.frame_end = plan.frame_start, plan.frame_end
    channels = settings.audio_channels if settings.audio_channels in movie.CHANNELS else "STEREO"
    with bpy.context.temp_override(scene=scene):
        result = bpy.ops.sound.mixdown(
            filepath=str(target),
            check_existing=False,
            relative_path=False,
            container="WAV",
            codec="PCM",
            format="F32",
            channels=channels,
            mixrate=settings.audio_mixrate,
        )
    if "FINISHED" not in result or not target.is_file() or target.stat().st_size == 0:
        raise StitchFailed(f"Blender could not mix the scene's sound down ({sorted(result)})")
    log.info("mixed down %d sound sources to %s, %d Hz", len(sources), channels, settings.audio_mixrate)
    return target


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
