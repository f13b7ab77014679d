"""Where things live in the stack's bucket: the S3 layout, written once.

``cas/sha256/<hex>``                     immutable uploads, keyed by their content's SHA-256
``jobs/<jobId>/manifest.json``           relative path -> hash, and the main file (:mod:`.manifest`)
``jobs/<jobId>/job.json``                the plan (:mod:`.plan`)
``jobs/<jobId>/frames/<frame>.<ext>``    rendered frames, six-digit frame numbers
``jobs/<jobId>/outputs/<path>``          File Output node files, at their path relative to the .blend's folder
``jobs/<jobId>/errors/<what>.json``      the worker's account of a failure (name, message, frame)
``jobs/<jobId>/previews/<frame>.jpg``    a small display-referred JPEG of each frame (the panel's flipbook)
``jobs/<jobId>/failed/<frame>.json``     a frame that failed for good in its latest try (:mod:`.failures`)
``jobs/<jobId>/<jobName>.mp4``           the video of a stills job (a display-referred H.264 preview)
``jobs/<jobId>/<outputStem>.<ext>``      the video of a movie job: the scene's output path's name, its container's
                                         extension (``mov``, ``mkv``, ...)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInput
from .ids import check_job_id, is_job_id
from .names import safe_name

CAS_PREFIX = "cas/sha256/"
JOBS_PREFIX = "jobs/"
FRAME_DIGITS = 6
PREVIEW_EXTENSION = "jpg"
PREVIEW_MAX_WIDTH = 480
"""Previews are at most this many pixels wide (never wider than the frame): a few tens of KB each."""
MAX_KEY_BYTES = 1024
"""S3 keys hold at most 1,024 bytes of UTF-8."""
_HEX = re.compile(r"^[0-9a-f]{64}$")
_MOVIE_SUFFIXES = frozenset({"mp4", "mov", "mkv", "webm", "avi", "dv", "flv", "mpg", "mpeg", "ogv", "ogg", "vob"})
"""Extensions Blender keeps at the end of a movie output path (its ``get_file_extensions``)."""


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: object) -> S3Uri:
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise InvalidInput(f"not an s3:// URI: {uri!r:.200}")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise InvalidInput(f"no bucket in URI: {uri!r:.200}")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Uri:
        return S3Uri(self.bucket, f"{self.key.rstrip('/')}/{name}" if self.key else name)


def check_sha256(hex_digest: object) -> str:
    if not isinstance(hex_digest, str) or not _HEX.match(hex_digest):
        raise InvalidInput(f"invalid sha256 digest: {hex_digest!r:.100}")
    return hex_digest


def cas_key(hex_digest: str) -> str:
    return CAS_PREFIX + check_sha256(hex_digest)


def job_prefix(job_id: str) -> str:
    return f"{JOBS_PREFIX}{check_job_id(job_id)}/"


def job_uri(bucket: str, job_id: str) -> str:
    """``s3://BUCKET/jobs/<jobId>``: the execution input's and the worker's ``outputUri``."""
    return f"s3://{bucket}/{job_prefix(job_id).rstrip('/')}"


def manifest_key(job_id: str) -> str:
    return job_prefix(job_id) + "manifest.json"


def plan_key(job_id: str) -> str:
    return job_prefix(job_id) + "job.json"


def frames_prefix(job_id: str) -> str:
    return job_prefix(job_id) + "frames/"


def frame_key(job_id: str, frame: int, extension: str) -> str:
    return f"{frames_prefix(job_id)}{frame:0{FRAME_DIGITS}d}.{extension}"


def frame_from_key(key: str) -> int | None:
    """The frame number of a frame key, or None for anything else under the prefix."""
    stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def previews_prefix(job_id: str) -> str:
    """A sibling of ``frames/``, never under it: a preview is not a frame (listing, verification, stitch and
    download look only under ``frames/``)."""
    return job_prefix(job_id) + "previews/"


def preview_key(job_id: str, frame: int) -> str:
    return f"{previews_prefix(job_id)}{frame:0{FRAME_DIGITS}d}.{PREVIEW_EXTENSION}"


def failed_prefix(job_id: str) -> str:
    return job_prefix(job_id) + "failed/"


def failed_key(job_id: str, frame: int) -> str:
    """One record per failed frame: the worker that renders the frame later (a resume) deletes it."""
    return f"{failed_prefix(job_id)}{frame:0{FRAME_DIGITS}d}.json"


def outputs_prefix(job_id: str) -> str:
    """``jobs/<jobId>/outputs/``: the compositor's File Output node files (see :mod:`.output_names`)."""
    return job_prefix(job_id) + "outputs/"


def output_key(job_id: str, relative: str) -> str:
    """The key of a File Output node file at ``relative`` (POSIX, below the .blend's folder as Blender wrote it)."""
    parts = relative.split("/")
    if not relative or any(part in ("", ".", "..") for part in parts):
        raise InvalidInput(f"not a relative output path: {relative!r:.200}")
    key = outputs_prefix(job_id) + relative
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInput(f"output path too long for an S3 key ({MAX_KEY_BYTES} bytes): {relative!r:.200}")
    return key


def errors_prefix(job_id: str) -> str:
    return job_prefix(job_id) + "errors/"


def error_key(job_id: str, action: str, chunk: int, attempt: int) -> str:
    """``errors/render-chunk-<I>-attempt-<N>.json`` or ``errors/stitch-attempt-<N>.json``."""
    what = f"render-chunk-{chunk}" if action == "render" else "stitch"
    return f"{errors_prefix(job_id)}{what}-attempt-{attempt}.json"


def video_key(job_id: str, name: str, extension: str = "mp4") -> str:
    """``jobs/<jobId>/<name>.<extension>``: the name made key-safe; the extension is a movie container's."""
    if not re.fullmatch(r"[a-z0-9]{1,5}", extension):
        raise InvalidInput(f"invalid video extension {extension!r:.40}")
    return f"{job_prefix(job_id)}{safe_name(name)}.{extension}"


def movie_stem(output_path: str) -> str:
    """The name part of a scene's output path (``//render/shot_###`` -> ``shot``): what the video of a movie job
    is called. Frame-number placeholders (``#``) and a movie extension Blender would replace are dropped, and the
    separators left at the end; empty when the path names only a folder (``//render/``)."""
    name = re.split(r"[/\\]", output_path)[-1]
    stem, dot, extension = name.rpartition(".")
    if dot and extension.lower() in _MOVIE_SUFFIXES:
        name = stem
    return name.replace("#", "").rstrip("._- ")


def job_id_from_output(output_key: str) -> str | None:
    """The job id of an output key ``jobs/<jobId>`` (trailing slash allowed), else None."""
    parts = output_key.strip("/").split("/")
    if len(parts) == 2 and parts[0] == JOBS_PREFIX.rstrip("/") and is_job_id(parts[1]):
        return parts[1]
    return None
