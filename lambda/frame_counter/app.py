"""The frame counter Lambda: validate the execution input, read the .blend's scene facts, write the plan.

Called by the state machine's first state with ``{"input": <execution input>, "jobId": <execution name>}``; a
bare execution input (no ``"input"`` key) is accepted too and gets a fresh unique job id. It writes the full plan
to ``jobs/<jobId>/job.json`` and returns only :meth:`Plan.summary` (constant size whatever the frame count).

Input decisions (the execution input of ARCHITECTURE.md; trust none of it):

* The input must be a JSON object, else ``InvalidInput``. Unknown fields are ignored and logged, so an older
  Lambda accepts a newer client's input (forward compatibility); known fields are checked strictly.
* ``inputUri`` or ``manifestUri`` is required. With a manifest (``{"version": 1, "main": PATH, "files": {PATH:
  SHA256}}``) the main .blend is read from ``cas/sha256/<hex>``, every listed file must exist (``InputNotFound``
  before any render is paid for), paths must be relative without ``..``; the plan's ``input_uri`` is the
  manifest. Without one, ``input_uri`` is the .blend itself.
* Every URI (input, manifest, output) must be an ``s3://`` URI inside ``BUCKET_NAME``, else ``InputOutsideBucket``
  (a malformed URI is ``InvalidInput``). ``outputUri`` is checked and otherwise ignored: a job's data always lives
  under ``jobs/<jobId>/`` so two jobs never share a key; it is accepted only because the seed's payload sends it.
* ``jobDefinitionArn`` / ``jobQueueArn`` are accepted only when equal to the stack's own (env
  ``RENDER_JOB_DEFINITION_ARN`` or ``STITCH_JOB_DEFINITION_ARN``, ``JOB_QUEUE_ARN``); the state machine uses its
  own ARNs regardless, so these fields can never redirect work.
* Integers (``frameStart``, ``frameEnd``, ``frameStep``, ``framesPerJob``) may be JSON integers, integral floats or
  decimal strings; booleans, fractions and words are ``InvalidInput``. ``frameStart``/``frameEnd``/``frameStep``
  override the file's. A range that selects nothing (end before start, step below 1), frames outside Blender's
  range (+-1,048,574) or more than 1,000,000 frames is ``NoFramesToRender``.
* ``framesPerJob``: ``"auto"`` (default) or 1..1,000,000. The auto rule is :func:`plan.auto_frames_per_job` with
  ``slots = max(1, MAX_VCPUS // JOB_VCPUS)``: one chunk per slot the queue can run at once, so each chunk loads the
  file once and renders many frames, and the queue is still filled. More than 10,000 chunks raises frames per job
  (``framesPerJobRaised`` in the plan and summary).
* ``jobName``: display name, control characters removed, trimmed to 128 characters; defaults to the main file's
  name. Keys use :func:`layout.safe_name` of it, never the raw name.
* ``scene``: a scene name; without it, the file's active scene (see ``blend_facts``).

The .blend is streamed to a private temporary directory (never held in memory) and deleted afterwards. Named
errors are the classes of ``render_on_aws.core.errors``, so the Lambda's ``errorType`` is the name the state
machine's Catch reports. Lambda-only code: no bpy here.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
import shutil
import tempfile
import time
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blend_facts
import boto3
from aws_lambda_powertools import Logger
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from render_on_aws.core import layout, plan
from render_on_aws.core.errors import (
    BlendFileUnreadable,
    InputNotFound,
    InputOutsideBucket,
    InvalidInput,
    NoCamera,
    NoFramesToRender,
    RenderOnAwsError,
)

logger = Logger(service="frame-counter")

KNOWN_FIELDS = frozenset(
    {
        "jobName",
        "inputUri",
        "outputUri",
        "manifestUri",
        "framesPerJob",
        "jobDefinitionArn",
        "jobQueueArn",
        "scene",
        "frameStart",
        "frameEnd",
        "frameStep",
    }
)
MAX_FRAME = 1_048_574
"""Blender's MAXFRAME: scene frames lie in -MAX_FRAME..MAX_FRAME."""
MAX_FRAMES = 1_000_000
"""More frames than this in one job is taken as a mistake (11.5 hours of film at 24 fps)."""
MAX_FRAMES_PER_JOB = MAX_FRAMES
JOB_NAME_LIMIT = 128
SCENE_NAME_LIMIT = 255
MAX_MANIFEST_BYTES = 32 * 1024 * 1024
MAX_MANIFEST_FILES = 100_000
MANIFEST_VERSION = 1
DEFAULT_MAX_VCPUS = 64
DEFAULT_JOB_VCPUS = 1
TRANSFER = TransferConfig(
    multipart_threshold=64 * 1024 * 1024,
    multipart_chunksize=16 * 1024 * 1024,
    max_concurrency=4,
    max_io_queue=64,
    io_chunksize=256 * 1024,
)
"""Bounded download memory: 4 threads and at most 64 x 256 KiB waiting for the disk, whatever the file size."""
_INTEGER = re.compile(r"^[+-]?[0-9]{1,12}$")
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "403", "AccessDenied"}
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


@dataclass(frozen=True)
class Settings:
    """What the stack tells the Lambda through its environment (template.yaml)."""

    bucket: str
    job_queue_arn: str | None
    job_definition_arns: frozenset[str]
    slots: int

    @classmethod
    def from_env(cls) -> Settings:
        bucket = os.environ.get("BUCKET_NAME", "").strip()
        if not bucket:
            raise RuntimeError("BUCKET_NAME is not set: the frame counter does not know the stack's bucket")
        definitions = (
            os.environ.get(name, "").strip() for name in ("RENDER_JOB_DEFINITION_ARN", "STITCH_JOB_DEFINITION_ARN")
        )
        max_vcpus = _env_int("MAX_VCPUS", DEFAULT_MAX_VCPUS)
        job_vcpus = _env_int("JOB_VCPUS", DEFAULT_JOB_VCPUS)
        return cls(
            bucket=bucket,
            job_queue_arn=os.environ.get("JOB_QUEUE_ARN", "").strip() or None,
            job_definition_arns=frozenset(arn for arn in definitions if arn),
            slots=max(1, max_vcpus // job_vcpus),
        )


def _env_int(name: str, default: int) -> int:
    """A positive integer setting; a bad value is the stack's mistake, so log it and keep the default."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        logger.warning("ignoring invalid environment value", extra={"setting": name, "value": raw[:40]})
        return default
    return int(raw)


@dataclass(frozen=True)
class Request:
    """The execution input after validation: every field typed, every URI inside the bucket."""

    job_id: str
    job_name: str | None
    blend: layout.S3Uri | None
    manifest: layout.S3Uri | None
    scene: str | None
    frame_start: int | None
    frame_end: int | None
    frame_step: int | None
    frames_per_job: int | None
    """None means "auto"."""


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Lambda entry point: returns the plan's summary, or raises a named error (its class name is the errorType)."""
    try:
        return _handle(event)
    except RenderOnAwsError as error:
        logger.warning("job refused", extra={"error": error.name, "cause": error.message})
        raise


def _handle(event: Any) -> dict[str, Any]:
    settings = Settings.from_env()
    execution_input, job_id = _unwrap(event)
    request = parse_input(execution_input, job_id, settings)
    s3 = boto3.client("s3")
    logger.info("counting frames", extra={"job_id": request.job_id, "input": str(request.manifest or request.blend)})

    if request.manifest is not None:
        main_path, blend_key = read_manifest(s3, request.manifest)
        input_uri = request.manifest
        main_file = main_path
    else:
        assert request.blend is not None
        blend_key = request.blend.key
        input_uri = request.blend
        main_file = _main_file_name(blend_key)

    facts = read_blend(s3, settings.bucket, blend_key, request.scene)
    scene = facts.scene
    if not scene.has_camera:
        raise NoCamera(f"scene {scene.name!r} has no camera: set one (Scene properties > Camera) and submit again")

    start = scene.frame_start if request.frame_start is None else request.frame_start
    end = scene.frame_end if request.frame_end is None else request.frame_end
    step = scene.frame_step if request.frame_step is None else request.frame_step
    frames = frame_range(start, end, step)
    wanted = request.frames_per_job or plan.auto_frames_per_job(len(frames), settings.slots)
    chunks, frames_per_job, raised = plan.chunk(frames, wanted)
    if raised:
        logger.info("frames per job raised", extra={"asked": wanted, "used": frames_per_job})

    job_name = request.job_name or clean_display_name(posixpath.basename(main_file).removesuffix(".blend")) or "render"
    job_plan = plan.Plan(
        job_id=request.job_id,
        job_name=job_name,
        scene=scene.name,
        frame_start=start,
        frame_end=end,
        frame_step=step,
        fps_num=scene.fps_num,
        fps_den=scene.fps_den,
        engine=scene.engine,
        resolution_x=scene.resolution_x,
        resolution_y=scene.resolution_y,
        resolution_percentage=scene.resolution_percentage,
        file_format=scene.file_format,
        frame_extension=plan.STILL_FORMATS.get(scene.file_format, "png"),
        has_camera=scene.has_camera,
        blender_version=facts.blender_version,
        input_uri=str(input_uri),
        main_file=main_file,
        output_uri=f"s3://{settings.bucket}/{layout.job_prefix(request.job_id).rstrip('/')}",
        video_key=layout.video_key(request.job_id, job_name),
        frames_per_job=frames_per_job,
        frames_per_job_raised=raised,
        chunks=chunks,
    )
    plan_key = layout.plan_key(request.job_id)
    s3.put_object(
        Bucket=settings.bucket, Key=plan_key, Body=job_plan.to_json().encode("utf-8"), ContentType="application/json"
    )
    summary = job_plan.summary(f"s3://{settings.bucket}/{plan_key}", f"s3://{settings.bucket}/{job_plan.video_key}")
    logger.info(
        "plan written",
        extra={"job_id": request.job_id, "frames": len(frames), "chunks": len(chunks), "scene": scene.name},
    )
    return summary


def _unwrap(event: Any) -> tuple[Any, str]:
    """``{"input": ..., "jobId": ...}`` from the state machine, or a bare execution input (fresh job id)."""
    if not isinstance(event, dict):
        raise InvalidInput(f"the execution input must be a JSON object, not {type(event).__name__}")
    if "input" in event:
        job_id = event.get("jobId")
        return event["input"], layout.check_job_id(job_id) if job_id is not None else new_job_id()
    return event, new_job_id()


def new_job_id() -> str:
    """Unique and sortable by time, valid for layout.check_job_id and as a Step Functions execution name."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex}"


def parse_input(data: Any, job_id: str, settings: Settings) -> Request:
    """Validate every field of the execution input (see the module docstring for the rules)."""
    if not isinstance(data, dict):
        raise InvalidInput(f"the execution input must be a JSON object, not {type(data).__name__}")
    unknown = sorted(str(name)[:64] for name in data if name not in KNOWN_FIELDS)
    if unknown:
        logger.warning("ignoring unknown input fields", extra={"fields": unknown[:20]})

    blend = _uri(data, "inputUri", settings.bucket)
    manifest = _uri(data, "manifestUri", settings.bucket)
    _uri(data, "outputUri", settings.bucket, is_object=False)
    if blend is None and manifest is None:
        raise InvalidInput("the input needs 'inputUri' (a .blend in the stack's bucket) or 'manifestUri'")
    if blend is not None and manifest is not None:
        logger.info("both inputUri and manifestUri given: the manifest's main file is used")

    for name, allowed in (
        ("jobDefinitionArn", settings.job_definition_arns),
        ("jobQueueArn", {settings.job_queue_arn} - {None}),
    ):
        value = data.get(name)
        if value is not None and value not in allowed:
            raise InvalidInput(f"{name} must name this stack's own ({', '.join(sorted(allowed)) or 'none set'})")

    job_name = data.get("jobName")
    if job_name is not None:
        if not isinstance(job_name, str):
            raise InvalidInput(f"jobName must be a string, not {type(job_name).__name__}")
        job_name = clean_display_name(job_name) or None

    scene = data.get("scene")
    if scene is not None and (not isinstance(scene, str) or not scene or len(scene) > SCENE_NAME_LIMIT):
        raise InvalidInput(f"scene must be a scene name (1 to {SCENE_NAME_LIMIT} characters), got {scene!r:.80}")

    frames_per_job = data.get("framesPerJob")  # null, like every absent field, means the default
    if frames_per_job is None or (isinstance(frames_per_job, str) and frames_per_job.strip().lower() == "auto"):
        per_job = None
    else:
        per_job = to_int(frames_per_job, "framesPerJob")
        if not 1 <= per_job <= MAX_FRAMES_PER_JOB:
            raise InvalidInput(f"framesPerJob must be 'auto' or 1 to {MAX_FRAMES_PER_JOB}, got {per_job}")

    overrides = {name: data.get(name) for name in ("frameStart", "frameEnd", "frameStep")}
    start, end, step = (None if value is None else to_int(value, name) for name, value in overrides.items())
    return Request(
        job_id=job_id,
        job_name=job_name,
        blend=blend,
        manifest=manifest,
        scene=scene,
        frame_start=start,
        frame_end=end,
        frame_step=step,
        frames_per_job=per_job,
    )


def _uri(data: dict[str, Any], name: str, bucket: str, is_object: bool = True) -> layout.S3Uri | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an s3:// URI string, not {type(value).__name__}")
    uri = layout.S3Uri.parse(value.strip())
    if uri.bucket != bucket:
        raise InputOutsideBucket(f"{name} {value!r:.200} is outside the stack's bucket {bucket!r}")
    if is_object and (not uri.key or uri.key.endswith("/")):
        raise InvalidInput(f"{name} must name an object, not a folder: {value!r:.200}")
    if len(uri.key.encode("utf-8")) > 1024:
        raise InvalidInput(f"{name} is longer than an S3 key can be")
    return uri


def to_int(value: Any, name: str) -> int:
    """An integer field that may arrive as a JSON number or a string; never a bool, a fraction or a word."""
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip())
    raise InvalidInput(f"{name} must be an integer, got {value!r:.80}")


def clean_display_name(name: str) -> str:
    """A job's display name: control, surrogate and bidirectional-override characters removed, 128 characters."""
    kept = (
        " " if char in "\t\r\n\v\f" else char
        for char in name
        if unicodedata.category(char) not in {"Cc", "Cs", "Zl", "Zp"} or char in "\t\r\n\v\f"
    )
    text = "".join(char for char in kept if char not in _BIDI_CONTROLS)
    return " ".join(text.split())[:JOB_NAME_LIMIT].strip()


def frame_range(start: int, end: int, step: int) -> list[int]:
    """The frames to render, or NoFramesToRender with the reason."""
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
    return plan.frame_numbers(start, end, step)


def _main_file_name(key: str) -> str:
    """The main file's name for the worker: the key's basename made safe, always ending in .blend."""
    stem = posixpath.basename(key).removesuffix(".blend")
    return layout.safe_name(stem, limit=120) + ".blend"


def _check_relative(path: Any) -> str:
    """A manifest path the worker can write under its job folder: relative, POSIX, no '..', no control chars."""
    if not isinstance(path, str) or not path or len(path) > 1024:
        raise InvalidInput(f"manifest path must be a non-empty string, got {path!r:.80}")
    parts = path.split("/")
    if (
        path.startswith("/")
        or "\\" in path
        or any(part in ("", ".", "..") for part in parts)
        or any(unicodedata.category(char).startswith("C") for char in path)
        or re.match(r"^[A-Za-z]:", path)
    ):
        raise InvalidInput(f"manifest path must be relative, without '..' or control characters: {path!r:.200}")
    return path


def read_manifest(s3: Any, uri: layout.S3Uri) -> tuple[str, str]:
    """Validate the manifest; returns (main path, cas key of the main .blend). Every listed file must exist."""
    try:
        response = s3.get_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as error:
        raise _s3_error(error, uri) from None
    if response.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
        response["Body"].close()
        raise InvalidInput(f"manifest is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB")
    try:
        manifest = json.loads(response["Body"].read())
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"manifest {uri} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        raise InvalidInput(f"manifest must be an object with version {MANIFEST_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InvalidInput("manifest 'files' must map relative paths to sha256 digests")
    if len(files) > MAX_MANIFEST_FILES:
        raise InvalidInput(f"manifest lists more than {MAX_MANIFEST_FILES} files")
    for path, digest in files.items():
        _check_relative(path)
        layout.check_sha256(digest)
    main = _check_relative(manifest.get("main"))
    if main not in files:
        raise InvalidInput(f"manifest main {main!r:.200} is not among its files")
    _check_all_exist(s3, uri.bucket, {layout.cas_key(digest) for digest in files.values()})
    return main, layout.cas_key(files[main])


def _check_all_exist(s3: Any, bucket: str, keys: set[str]) -> None:
    """HEAD every uploaded file (in parallel): a missing dependency fails now, not after hours of rendering."""

    def missing(key: str) -> str | None:
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND_CODES:
                return key
            raise
        return None

    with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
        absent = sorted(key for key in pool.map(missing, sorted(keys)) if key)
    if absent:
        raise InputNotFound(f"{len(absent)} file(s) of the manifest are not uploaded, e.g. s3://{bucket}/{absent[0]}")


def read_blend(s3: Any, bucket: str, key: str, scene: str | None) -> blend_facts.BlendFacts:
    """Stream the object to a private temp directory, read its facts, delete it (also on errors)."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        raise _s3_error(error, layout.S3Uri(bucket, key)) from None
    size = int(head.get("ContentLength", 0))
    if size == 0:
        raise BlendFileUnreadable(f"s3://{bucket}/{key} is empty, not a .blend file")
    workdir = Path(tempfile.mkdtemp(prefix="frame-counter-"))
    try:
        free = shutil.disk_usage(workdir).free
        if size > free:
            raise InvalidInput(f"the .blend ({size} bytes) is larger than the Lambda's free temporary space ({free})")
        local = workdir / "main.blend"
        try:
            s3.download_file(bucket, key, str(local), Config=TRANSFER)
        except ClientError as error:
            raise _s3_error(error, layout.S3Uri(bucket, key)) from None
        return blend_facts.read_facts(local, scene)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _s3_error(error: ClientError, uri: layout.S3Uri) -> Exception:
    """Missing (or unreadable) objects become InputNotFound; other S3 failures stay what they are."""
    code = _error_code(error)
    if code in _NOT_FOUND_CODES:
        return InputNotFound(f"{uri} does not exist (or is not readable: {code})")
    return error
