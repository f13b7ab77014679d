"""The frame counter Lambda: validate the execution input, read the .blend's scene facts, write the plan.

Called by the state machine's first state with ``{"input": <execution input>, "jobId": <execution name>}``; a
bare execution input (no ``"input"`` key) is accepted too and gets a fresh unique job id. It writes the full plan
to ``jobs/<jobId>/job.json`` and returns only :meth:`Plan.summary` (constant size whatever the frame count).

The execution input is parsed by the contract (:mod:`render_contract.execution_input`, which holds its rules);
this handler adds what only the stack knows: its bucket and own ARNs (environment), and the auto rule's slots
(``max(1, MAX_VCPUS // JOB_VCPUS)``: one chunk per slot the queue can run at once). With a manifest
(:mod:`render_contract.manifest`) every listed upload must exist (``InputNotFound`` before any render is paid for);
the plan's ``input_uri`` is then the manifest, else the .blend itself.

A second action, ``explainFailure``, runs after a failed Batch step and re-raises the worker's own named error
(see :func:`explain_failure`), so the execution's ``error`` is ``NoCamera`` or ``MissingFrames``, not a generic one.

The .blend is streamed to a private temporary directory (never held in memory) and deleted afterwards. Named
errors are the classes of ``render_contract.errors``, so the Lambda's ``errorType`` is the name the state
machine's Catch reports. Lambda-only code: no bpy here.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import blend_facts
import boto3
from aws_lambda_powertools import Logger
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from render_contract import execution_input, failures, ids, layout, names, output_names, plan, runtimes
from render_contract.errors import (
    BATCH_CAPACITY_PREFIX,
    BlendFileUnreadable,
    FramesFailed,
    InputNotFound,
    InvalidInput,
    NoCamera,
    NoCapacity,
    RenderFailed,
    RenderOnAwsError,
    StitchFailed,
    from_name,
    readable_cause,
)
from render_contract.manifest import MAX_MANIFEST_BYTES, Manifest
from render_contract.names import clean_display_name

logger = Logger(service="frame-counter")
EXPLAIN_FAILURE = "explainFailure"

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
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "403", "AccessDenied"}


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


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Lambda entry point: returns the plan's summary, or raises a named error (its class name is the errorType)."""
    try:
        if isinstance(event, dict) and event.get("action") == EXPLAIN_FAILURE:
            explain_failure(event)
        return _handle(event)
    except RenderOnAwsError as error:
        logger.warning("job refused", extra={"error": error.name, "cause": error.message})
        raise


def _handle(event: Any) -> dict[str, Any]:
    settings = Settings.from_env()
    data, name = _unwrap(event)
    job_id, run = ids.split_execution_name(name)
    queue_arns = frozenset() if settings.job_queue_arn is None else frozenset({settings.job_queue_arn})
    request = execution_input.parse(data, settings.bucket, settings.job_definition_arns, queue_arns)
    if request.unknown_fields:
        logger.warning("ignoring unknown input fields", extra={"fields": list(request.unknown_fields[:20])})
    s3 = boto3.client("s3")
    if run > 1:
        return resume(s3, settings.bucket, job_id, run)
    logger.info("counting frames", extra={"job_id": job_id, "input": str(request.source)})

    if request.manifest is not None:
        if request.manifest.key != layout.manifest_key(job_id):
            raise InvalidInput(
                f"manifestUri must be this job's own {layout.manifest_key(job_id)} (artists write manifests only "
                f"under their own jobs), not {request.manifest.key!r:.200}"
            )
        manifest = read_manifest(s3, request.manifest)
        blend_key = layout.cas_key(manifest.main_digest)
        main_file = manifest.main
    else:
        assert request.blend is not None
        blend_key = request.blend.key
        main_file = _main_file_name(blend_key)

    facts = read_blend(s3, settings.bucket, blend_key, request.scene)
    scene = facts.scene
    if not scene.has_camera:
        raise NoCamera(f"scene {scene.name!r} has no camera: set one (Scene properties > Camera) and submit again")

    # The Blender that renders: the file's series, the nearest newer one, or the override (BlenderTooNew and
    # UnknownRuntime end the job here, before any Batch job).
    runtime = runtimes.choose(facts.blender_version, request.blender_runtime, request.blender_version)
    if runtime.notices:
        logger.info("runtime notices", extra={"notices": list(runtime.notices)})

    start = scene.frame_start if request.frame_start is None else request.frame_start
    end = scene.frame_end if request.frame_end is None else request.frame_end
    step = scene.frame_step if request.frame_step is None else request.frame_step
    frames = plan.frame_range(start, end, step)
    wanted = request.frames_per_job or plan.auto_frames_per_job(len(frames), settings.slots)
    chunks, frames_per_job, raised = plan.chunk(frames, wanted)
    if raised:
        logger.info("frames per job raised", extra={"asked": wanted, "used": frames_per_job})

    job_name = request.job_name or clean_display_name(posixpath.basename(main_file).removesuffix(".blend")) or "render"
    scene_output_path = output_path(scene, main_file)
    job_plan = plan.Plan(
        job_id=job_id,
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
        input_uri=str(request.source),
        main_file=main_file,
        output_uri=layout.job_uri(settings.bucket, job_id),
        video_key=_video_key(job_id, job_name, scene.movie_container, scene_output_path),
        video_container=scene.movie_container,
        video_audio=scene.movie_audio,
        frames_per_job=frames_per_job,
        frames_per_job_raised=raised,
        chunks=chunks,
        allow_scripts=request.allow_scripts,
        python_use=list(facts.python_use),
        blender_runtime=runtime.series,
        blender_runtime_version=runtime.bpy_version,
        artist_blender_version=request.blender_version or "",
        runtime_notices=list(runtime.notices),
        output_path=scene_output_path,
        use_file_extension=scene.output.use_file_extension,
        color_mode=scene.output.color_mode,
        color_depth=scene.output.color_depth,
        quality=scene.output.quality,
        exr_codec=scene.output.exr_codec,
        file_output_nodes=list(scene.output.file_output_nodes),
    )
    plan_key = layout.plan_key(job_id)
    s3.put_object(
        Bucket=settings.bucket, Key=plan_key, Body=job_plan.to_json().encode("utf-8"), ContentType="application/json"
    )
    summary = job_plan.summary(f"s3://{settings.bucket}/{plan_key}", f"s3://{settings.bucket}/{job_plan.video_key}")
    logger.info(
        "plan written",
        extra={
            "job_id": job_id,
            "frames": len(frames),
            "chunks": len(chunks),
            "scene": scene.name,
            "blender": runtime.bpy_version,
        },
    )
    return summary


def _video_key(job_id: str, job_name: str, container: str, output_path: str) -> str:
    """A movie job's video is named as the artist's Blender would name it: the output path's name with the
    container's extension (``//render/shot_`` in QuickTime -> ``shot.mov``; the job name when the path is a
    folder); a stills job's preview is ``<jobName>.mp4``."""
    if not container:
        return layout.video_key(job_id, job_name)
    extension = plan.MOVIE_CONTAINERS.get(container, plan.PREVIEW_VIDEO_EXTENSION)
    return layout.video_key(job_id, layout.movie_stem(output_path) or job_name, extension)


def resume(s3: Any, bucket: str, job_id: str, run: int) -> dict[str, Any]:
    """A resumed job (execution ``<jobId>--r<N>``) renders with the plan it has: never planned again, so a resume
    can neither change what the job renders nor move its frames; workers skip the frames already whole in S3."""
    key = layout.plan_key(job_id)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if _error_code(error) in _NOT_FOUND_CODES:
            raise InvalidInput(f"job {job_id} was never planned: there is nothing to resume, submit it") from None
        raise
    job_plan = plan.Plan.from_json(body)
    logger.info("resuming", extra={"job_id": job_id, "run": run, "frames": len(job_plan.frames)})
    return job_plan.summary(f"s3://{bucket}/{key}", f"s3://{bucket}/{job_plan.video_key}")


def _unwrap(event: Any) -> tuple[Any, str]:
    """``{"input": ..., "jobId": ...}`` from the state machine, or a bare execution input (fresh job id)."""
    if not isinstance(event, dict):
        raise InvalidInput(f"the execution input must be a JSON object, not {type(event).__name__}")
    if "input" in event:
        name = event.get("jobId")
        return event["input"], ids.check_job_id(name) if name is not None else ids.new_job_id("render")
    name = event.get("jobName")
    return event, ids.new_job_id(name if isinstance(name, str) else "render")


def explain_failure(event: dict[str, Any]) -> NoReturn:
    """After a failed Batch step: raise the worker's own named error, so the execution reports it.

    The state machine calls this with ``{"action": "explainFailure", "stage": "render"|"stitch", "jobId": ...,
    "failure": <the Catch's {Error, Cause}>}``. The worker's newest error record of that stage
    (``jobs/<jobId>/errors/``) names the error (``NoCamera``, ``MissingFrames``, ...); without one (a host lost
    for good, retries exhausted, a container that never started) the stage's generic error carries Batch's reason.
    """
    settings = Settings.from_env()
    job_id = ids.split_execution_name(event.get("jobId"))[0]
    stage = event.get("stage")
    generic = StitchFailed if stage == "stitch" else RenderFailed
    s3 = boto3.client("s3")
    failure = event.get("failure")
    cause = failure.get("Cause") if isinstance(failure, dict) else None
    # First: a job the queue cancelled for want of capacity ran no worker, so any failure or error record in S3 is
    # an earlier run's (a resume keeps them) and must not hide NoCapacity, which the On-Demand fallback catches.
    capacity = _capacity_reason(cause if isinstance(cause, str) else None)
    if capacity is not None:
        raise NoCapacity(
            f"no instance could be had for the {stage or 'render'} job within the stack's CapacityWaitSeconds; "
            f"Batch cancelled it ({capacity}). Submit again later, or ask the admin for more instance types "
            "or the On-Demand fallback"
        )
    if stage != "stitch":
        explain_failed_frames(s3, settings.bucket, job_id)
    record = _newest_error_record(s3, settings.bucket, job_id, "stitch" if stage == "stitch" else "render")
    if record is not None:
        frame = record.get("frame") if isinstance(record.get("frame"), int) else None
        message = str(record.get("message") or "no message")[:2000]
        if frame is not None and f"frame {frame}" not in message:
            message = f"frame {frame}: {message}"
        raise from_name(str(record.get("error") or generic.__name__)[:64], message, frame=frame)
    raise generic(readable_cause(cause if isinstance(cause, str) else None))


def explain_failed_frames(s3: Any, bucket: str, job_id: str) -> None:
    """Raises ``FramesFailed`` listing every failed frame of every chunk with its cause, when the workers recorded
    any (``jobs/<jobId>/failed/``) for a frame that is still not in S3; returns otherwise.

    Frames missing for another reason (a chunk whose retries ran out) are named too: a resume renders both."""
    recorded = _keys(s3, bucket, layout.failed_prefix(job_id))
    if not recorded:  # the usual case: no frame listing at all
        return
    present = _frames_in_s3(s3, bucket, job_id)
    keys = [key for key in recorded if layout.frame_from_key(key) not in present]
    if not keys:
        return

    def read(key: str) -> failures.FrameFailure | None:
        try:
            return failures.FrameFailure.from_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except (InvalidInput, ClientError):
            return None

    with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
        found = [failure for failure in pool.map(read, keys) if failure is not None]
    if not found:
        return
    planned: list[int] = []
    try:
        planned = plan.Plan.from_json(s3.get_object(Bucket=bucket, Key=layout.plan_key(job_id))["Body"].read()).frames
    except (ClientError, InvalidInput, ValueError, TypeError, KeyError):
        logger.warning("plan unreadable while explaining failed frames", extra={"job_id": job_id})
    not_rendered = [frame for frame in planned if frame not in present]
    raise FramesFailed(failures.describe(found, not_rendered), frame=min(failure.frame for failure in found))


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    paginator = s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _frames_in_s3(s3: Any, bucket: str, job_id: str) -> set[int]:
    return {
        frame
        for key in _keys(s3, bucket, layout.frames_prefix(job_id))
        if (frame := layout.frame_from_key(key)) is not None
    }


def _capacity_reason(cause: str | None) -> str | None:
    """Batch's capacity reason when the failed job (or, for an array, one of its failed children) was cancelled by
    the queue's time limit for want of instances; None otherwise. One ListJobs call for an array job."""
    try:
        described = json.loads(cause or "")
    except ValueError:
        return None
    if not isinstance(described, dict):
        return None
    reason = str(described.get("StatusReason") or "")
    if reason.startswith(BATCH_CAPACITY_PREFIX):
        return reason
    job_id = described.get("JobId")
    if not isinstance(job_id, str) or not described.get("ArrayProperties"):
        return None
    try:
        children = boto3.client("batch").list_jobs(arrayJobId=job_id, jobStatus="FAILED", maxResults=100)
    except ClientError:
        return None
    for child in children.get("jobSummaryList", []):
        if str(child.get("statusReason") or "").startswith(BATCH_CAPACITY_PREFIX):
            return str(child["statusReason"])
    return None


def _newest_error_record(s3: Any, bucket: str, job_id: str, stage: str) -> dict[str, Any] | None:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=layout.errors_prefix(job_id) + stage)
    records = sorted(listing.get("Contents", []), key=lambda item: item["LastModified"])
    if not records:
        return None
    try:
        record = json.loads(s3.get_object(Bucket=bucket, Key=records[-1]["Key"])["Body"].read())
    except (ValueError, ClientError):
        return None
    return record if isinstance(record, dict) else None


def output_path(scene: blend_facts.SceneFacts, main_file: str) -> str:
    """The scene's output path with Blender 5's path templates filled in (``{blend_name}``, ``{scene_name}``...),
    as the worker's Blender will: frames are named from it at download. A template this cannot reproduce (a
    format specifier) stays as written and is logged."""
    output = scene.output
    variables = {
        "blend_name": posixpath.basename(main_file).removesuffix(".blend"),
        "fps": repr(output.fps),
        "resolution_x": str(scene.resolution_x * scene.resolution_percentage // 100),  # the rendered size
        "resolution_y": str(scene.resolution_y * scene.resolution_percentage // 100),
        "scene_name": scene.name,
        "camera_name": output.camera_name,
    }
    try:
        return output_names.expand_templates(output.path, variables)
    except ValueError as error:
        logger.warning("output path kept as written", extra={"path": output.path[:200], "reason": str(error)})
        return output.path


def _main_file_name(key: str) -> str:
    """The main file's name for the worker: the key's basename made safe, always ending in .blend."""
    stem = posixpath.basename(key).removesuffix(".blend")
    return names.safe_name(stem, limit=120) + ".blend"


def read_manifest(s3: Any, uri: layout.S3Uri) -> Manifest:
    """Validate the manifest (the contract's rule); every listed file must exist before a render is paid for."""
    try:
        response = s3.get_object(Bucket=uri.bucket, Key=uri.key)
    except ClientError as error:
        raise _s3_error(error, uri) from None
    if response.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
        response["Body"].close()
        raise InvalidInput(f"manifest is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB")
    manifest = Manifest.parse(response["Body"].read())
    _check_all_exist(s3, uri.bucket, manifest.cas_keys())
    return manifest


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
