"""The plan (``jobs/<jobId>/job.json``): everything a worker needs, written once by the frame counter.

The state machine carries only :func:`Plan.summary`, which stays small whatever the frame count (Step Functions
payloads are limited to 256 KB); workers read the whole plan from S3.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from .errors import InvalidInput, NoFramesToRender
from .ids import JOB_ID_LIMIT

PLAN_VERSION = 1
MAX_ARRAY_SIZE = 10_000
"""AWS Batch array jobs hold 2 to 10,000 children; one chunk runs as a plain job."""
STILL_FORMATS = {
    "PNG": "png",
    "JPEG": "jpg",
    "OPEN_EXR": "exr",
    "OPEN_EXR_MULTILAYER": "exr",
    "TIFF": "tif",
    "BMP": "bmp",
    "WEBP": "webp",
}
"""Formats the worker writes as the scene sets them (depth, colour mode, quality, codec, every view layer and pass
of a multilayer EXR); anything else (movies, formats the worker cannot verify) is rendered to PNG."""


MULTILAYER_FORMAT = "OPEN_EXR_MULTILAYER"
MOVIE_CONTAINERS = {
    "MPEG4": "mp4",
    "QUICKTIME": "mov",
    "MKV": "mkv",
    "WEBM": "webm",
    "AVI": "avi",
    "DV": "dv",
    "FLASH": "flv",
    "MPEG1": "mpg",
    "MPEG2": "mpg",
    "OGG": "ogv",
}
"""Blender's FFmpeg containers (``scene.render.ffmpeg.format``) and the extension of the video the stitch writes
for a scene whose output is a movie. A stills job's preview video is always ``mp4``."""
PREVIEW_VIDEO_EXTENSION = "mp4"


MAX_FRAME = 1_048_574
"""Blender's MAXFRAME: scene frames lie in -MAX_FRAME..MAX_FRAME."""
MAX_FRAMES = 1_000_000
"""More frames than this in one job is taken as a mistake (11.5 hours of film at 24 fps)."""


def frame_numbers(start: int, end: int, step: int) -> list[int]:
    return list(range(start, end + 1, step))


def frame_range(start: int, end: int, step: int) -> list[int]:
    """The frames to render, or ``NoFramesToRender`` with the reason."""
    if step < 1:
        raise NoFramesToRender(f"frame step {step} is below 1")
    if end < start:
        raise NoFramesToRender(f"frame end {end} is before frame start {start}")
    for label, value in (("start", start), ("end", end), ("step", step)):
        if abs(value) > MAX_FRAME:
            raise NoFramesToRender(f"frame {label} {value} is outside Blender's range (+-{MAX_FRAME})")
    count = (end - start) // step + 1
    if count > MAX_FRAMES:
        raise NoFramesToRender(f"{count} frames is more than one job may render ({MAX_FRAMES})")
    return frame_numbers(start, end, step)


def auto_frames_per_job(frame_count: int, parallel_chunks: int) -> int:
    """The ``"auto"`` rule: one chunk per slot the queue can run at once, as even as the frames allow.

    Each chunk pays once for the container start and the file load, then renders its frames back to back,
    so fewer, longer chunks waste less; but fewer chunks than parallel slots leaves the queue idle. So:
    ``ceil(frames / slots)`` frames a chunk, where ``slots`` is the stack's parallel capacity (max vCPUs /
    vCPUs per render job on AWS; the worker count on the local cloud).
    """
    return max(1, math.ceil(frame_count / max(1, parallel_chunks)))


def coarse_to_fine(count: int) -> list[int]:
    """Indices ``0..count-1`` coarse to fine (van der Corput / bit-reversal order): 0, then the middle, then the
    quarters, the eighths... so every prefix of the list is spread over the whole range, each gap at most about
    twice ``count / len(prefix)``."""
    order = [0]
    size = 1
    while size < count:
        size *= 2
    stride = size
    while stride > 1:  # [0] -> [0, s/2] -> [0, s/2, s/4, 3s/4] -> ...: each level fills the middle of the last's gaps
        stride //= 2
        order += [index + stride for index in order]
    return [index for index in order if index < count] if count > 0 else []


def chunk(frames: list[int], frames_per_job: int) -> tuple[list[list[int]], int, bool]:
    """Split frames into chunks; raise frames per job when Batch's array limit would be exceeded.

    Progressive order: the frames are put coarse to fine (:func:`coarse_to_fine`) and dealt round-robin to the
    ``ceil(frames / frames_per_job)`` chunks, so each chunk's list (rendered in list order, in one Blender) is
    itself coarse to fine, and the frames the chunks render k-th together extend the same coarse-to-fine prefix:
    the frames that finish first spread over the whole shot. A chunk holds at most ``frames_per_job`` frames.

    Returns (chunks, frames_per_job actually used, whether it was raised).
    """
    if frames_per_job < 1:
        raise InvalidInput(f"framesPerJob must be at least 1, got {frames_per_job}")
    raised = False
    if math.ceil(len(frames) / frames_per_job) > MAX_ARRAY_SIZE:
        frames_per_job = math.ceil(len(frames) / MAX_ARRAY_SIZE)
        raised = True
    count = math.ceil(len(frames) / frames_per_job)
    ordered = [frames[index] for index in coarse_to_fine(len(frames))]
    chunks = [ordered[i::count] for i in range(count)]
    return chunks, frames_per_job, raised


def exact_fps(frs_sec: int, frs_sec_base: float) -> Fraction:
    """``frs_sec / frs_sec_base`` as an exact fraction: 30 / 1.001 (stored as a float) becomes 30000/1001."""
    if frs_sec <= 0 or frs_sec_base <= 0:
        raise InvalidInput(f"invalid frame rate {frs_sec}/{frs_sec_base}")
    return (Fraction(frs_sec) / Fraction(frs_sec_base).limit_denominator(10_000)).limit_denominator(1_000_000)


@dataclass
class Plan:
    job_id: str
    job_name: str
    scene: str
    frame_start: int
    frame_end: int
    frame_step: int
    fps_num: int
    fps_den: int
    engine: str
    resolution_x: int
    resolution_y: int
    resolution_percentage: int
    file_format: str
    """The format the file asks for (its ``image_settings.file_format``)."""
    frame_extension: str
    """The extension of the frames the farm writes (``png`` unless the file asks for another still format)."""
    has_camera: bool
    blender_version: str
    input_uri: str
    """``s3://`` URI of the main .blend, or of the job's manifest.json."""
    main_file: str
    """Path of the main .blend relative to the job's root (the manifest's ``main``)."""
    output_uri: str
    video_key: str
    frames_per_job: int
    frames_per_job_raised: bool
    chunks: list[list[int]] = field(default_factory=list)
    allow_scripts: bool = False
    """The artist allowed the file's Python (registered scripts, Python drivers) to run on the farm, for this job."""
    python_use: list[str] = field(default_factory=list)
    """What in the file needs Python to render as in the artist's Blender (scripts, drivers), found by the frame
    counter: with ``allow_scripts`` off it renders differently, and the client warns the artist."""
    video_container: str = ""
    """Blender's container name (a :data:`MOVIE_CONTAINERS` key) when the scene's output is a movie: the stitch
    then reproduces the scene's movie (codec, quality, audio) in ``video_key``. Empty for a stills job, whose
    video is a display-referred H.264 preview."""
    video_audio: str = ""
    """The sound a movie output asks for, in words (``AAC 192 kb/s, stereo, 48000 Hz``; ``NONE``): what the
    client says will come back. The stitch reads the settings themselves with Blender."""
    blender_runtime: str = ""
    """The runtime series every worker renders with (a key of :data:`.runtimes.RUNTIMES`, chosen by
    :func:`.runtimes.choose`); empty in plans written before runtimes existed: the worker's default Blender."""
    blender_runtime_version: str = ""
    """That runtime's pinned Blender version (``"4.2.23"``): what "rendered with Blender ..." says."""
    artist_blender_version: str = ""
    """The submitter's own Blender (``bpy.app.version``), when the client sent it."""
    runtime_notices: list[str] = field(default_factory=list)
    """``"Name: message"`` warnings about the runtime (another series than the file's, a Blender mismatch)."""
    output_path: str = ""
    """The scene's output path (``render.filepath``, e.g. ``//renders/shot010_####``): frames are named from it at
    download (:mod:`.output_names`); the farm's keys stay ``frames/<NNNNNN>.<ext>``."""
    use_file_extension: bool = True
    color_mode: str = ""
    """The scene's image settings as the frame counter read them (``BW``/``RGB``/``RGBA``, ``8``/``16``/``32``...,
    JPEG/WebP quality, EXR codec): the worker keeps the file's own; these say what will come back."""
    color_depth: str = ""
    quality: int = 0
    exr_codec: str = ""
    file_output_nodes: list[str] = field(default_factory=list)
    """``<node name>: <path>`` of each compositor File Output node the frame counter found: their files come back
    too (the worker finds the nodes itself; this is what the client says before the render)."""
    version: int = PLAN_VERSION

    @property
    def frames(self) -> list[int]:
        return frame_numbers(self.frame_start, self.frame_end, self.frame_step)

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    @property
    def stitch_extension(self) -> str:
        """The frames the stitch encodes: the main frames, except a multilayer EXR's (FFmpeg cannot read multi-part
        EXR), whose first layer the worker also stores as ``frames/<NNNNNN>.png``."""
        return (
            "png" if self.file_format == MULTILAYER_FORMAT and self.frame_extension == "exr" else self.frame_extension
        )

    def chunk_frames(self, index: int) -> list[int]:
        if not 0 <= index < len(self.chunks):
            raise InvalidInput(f"chunk index {index} outside 0..{len(self.chunks) - 1}")
        return self.chunks[index]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        data: dict[str, Any] = json.loads(text)
        if data.get("version") != PLAN_VERSION:
            raise InvalidInput(f"unsupported plan version {data.get('version')!r}")
        return cls(**data)

    def summary(self, plan_uri: str, video_uri: str) -> dict[str, Any]:
        """The small object the state machine carries (constant size whatever the frame count)."""
        count = len(self.frames)
        if count == 0:
            raise NoFramesToRender("the plan has no frames")
        fps = self.fps
        return {
            "jobId": self.job_id,
            "jobName": self.job_name,
            "scene": self.scene,
            "frames": {"start": self.frame_start, "end": self.frame_end, "step": self.frame_step, "count": count},
            "fps": round(float(fps), 6),
            "fpsExact": f"{fps.numerator}/{fps.denominator}",
            "engine": self.engine,
            "chunkCount": len(self.chunks),
            "framesPerJob": self.frames_per_job,
            "framesPerJobRaised": self.frames_per_job_raised,
            "allowScripts": self.allow_scripts,
            "pythonUse": len(self.python_use),
            "blender": {"runtime": self.blender_runtime, "version": self.blender_runtime_version},
            "runtimeNotices": [notice[:300] for notice in self.runtime_notices[:4]],
            "planUri": plan_uri,
            "videoUri": video_uri,
            "batch": {
                "jobName": self.job_id[:JOB_ID_LIMIT],
                "inputUri": self.input_uri,
                "outputUri": self.output_uri,
                "framesPerJob": str(self.frames_per_job),
            },
        }
