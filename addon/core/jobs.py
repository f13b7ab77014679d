"""Submitting, following, cancelling and downloading a render job: the one client the CLI and Blender share.

A job is a Step Functions execution whose name is the job id, so ``jobs/<jobId>/`` never collides and the
execution ARN follows from the state machine's. Progress comes from S3 (each rendered frame appears at once)
and from DescribeExecution: at most two calls a poll.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions

from . import cas, download_paths
from .connection import Connection
from .download_paths import SkippedKey
from .errors import (
    ConnectionFailed,
    InputNotFound,
    InvalidInput,
    RenderOnAwsError,
    UnsafeDownloadKey,
    from_name,
)
from .layout import (
    S3Uri,
    errors_prefix,
    frame_from_key,
    frames_prefix,
    job_prefix,
    manifest_key,
    plan_key,
    safe_name,
)

MANIFEST_VERSION = 1
AWS_POLL_SECONDS = 10.0
"""Polling policy on AWS (CLI and add-on): two calls a poll, so 12 AWS calls a minute while a job renders."""
MAX_JOB_NAME = 128
"""The frame counter keeps 128 characters of a job name; longer ones would only grow the execution input."""
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


@dataclass(frozen=True)
class SubmitRequest:
    blend: Path
    job_name: str | None = None
    frames_per_job: str = "auto"
    frame_start: int | None = None
    frame_end: int | None = None
    frame_step: int | None = None
    scene: str | None = None

    def execution_input(self, job_id: str, bucket: str, job_name: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "jobName": job_name[:MAX_JOB_NAME],
            "manifestUri": f"s3://{bucket}/{manifest_key(job_id)}",
            "outputUri": f"s3://{bucket}/{job_prefix(job_id).rstrip('/')}",
            "framesPerJob": str(self.frames_per_job),
        }
        optional = {
            "frameStart": self.frame_start,
            "frameEnd": self.frame_end,
            "frameStep": self.frame_step,
            "scene": self.scene,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        return data


@dataclass(frozen=True)
class JobRef:
    job_id: str
    execution_arn: str
    bucket: str

    @classmethod
    def from_id(cls, connection: Connection, job_id: str) -> JobRef:
        machine = connection.outputs.state_machine_arn
        if ":stateMachine:" not in machine:
            raise InvalidInput(f"unexpected state machine ARN {machine!r}")
        arn = machine.replace(":stateMachine:", ":execution:", 1) + f":{job_id}"
        return cls(job_id, arn, connection.outputs.bucket)


@dataclass
class JobStatus:
    job_id: str
    state: str
    """The execution's status: RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED."""
    phase: str
    """What the artist sees: counting frames, rendering, stitching, done, failed, cancelled."""
    frames_done: int = 0
    frames_total: int | None = None
    last_frame: int | None = None
    error: str | None = None
    cause: str | None = None
    video_key: str | None = None
    started: datetime | None = None
    stopped: datetime | None = None
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def raise_for_failure(self) -> None:
        if self.state == "ABORTED":
            raise from_name("JobCancelled", "the job was cancelled")
        if self.finished and self.state != "SUCCEEDED":
            raise from_name(self.error or "RenderFailed", self.cause or self.state)


def new_job_id(job_name: str) -> str:
    """Unique per submission, readable in the console: ``<name>-<UTC time>-<random>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{safe_name(job_name, 40).replace('.', '_')}-{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class MissingFile:
    """A file the scene refers to that is not on the artist's disk (it would render pink or empty)."""

    path: str
    used_by: str


@dataclass
class PreparedJob:
    """What a submission will upload, known before anything is uploaded.

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

    @property
    def total_bytes(self) -> int:
        return sum(stored.size for stored in {f.sha256: f for f in self.files.values()}.values())

    def manifest(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "main": self.main,
            "files": {path: stored.sha256 for path, stored in sorted(self.files.items())},
        }

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
    from . import hashcache, packing  # blender-asset-tracer: imported only when something is packed

    blend = Path(request.blend)
    if not blend.is_file():
        raise InputNotFound(f"no such .blend file: {blend}")
    work_dir = Path(tempfile.mkdtemp(prefix="render-on-aws-pack-"))
    try:
        tree = packing.pack_blend(blend, work_dir)
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
    )


def submit_prepared(
    connection: Connection,
    prepared: PreparedJob,
    progress: cas.Progress | None = None,
    cancel: threading.Event | None = None,
) -> JobRef:
    """Uploads what the bucket lacks, writes the manifest, starts the execution (named after the job id)."""
    outputs = connection.outputs
    s3 = connection.client("s3")
    job_id = new_job_id(prepared.job_name)
    try:
        cas.upload(s3, outputs.bucket, list(prepared.files.values()), progress=progress, cancel=cancel)
        s3.put_object(
            Bucket=outputs.bucket,
            Key=manifest_key(job_id),
            Body=json.dumps(prepared.manifest()).encode(),
            ContentType="application/json",
        )
        if cancel is not None and cancel.is_set():
            raise from_name("JobCancelled", "cancelled before the job started")
        execution = connection.client("stepfunctions").start_execution(
            stateMachineArn=outputs.state_machine_arn,
            name=job_id,
            input=json.dumps(prepared.request.execution_input(job_id, outputs.bucket, prepared.job_name)),
        )
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError) as error:
        raise ConnectionFailed(f"lost the connection while submitting: {error}") from error
    except botocore.exceptions.NoCredentialsError as error:
        raise ConnectionFailed("no AWS credentials: log in (aws sso login) or choose a profile") from error
    except botocore.exceptions.ClientError as error:
        detail = error.response.get("Error", {})
        raise ConnectionFailed(
            f"AWS refused the submission ({detail.get('Code', 'error')}): {detail.get('Message', error)}"
        ) from error
    except botocore.exceptions.BotoCoreError as error:
        raise ConnectionFailed(f"submitting failed: {error}") from error
    return JobRef(job_id, execution["executionArn"], outputs.bucket)


def submit(
    connection: Connection,
    request: SubmitRequest,
    progress: cas.Progress | None = None,
    cancel: threading.Event | None = None,
) -> JobRef:
    """:func:`prepare` then :func:`submit_prepared` (missing files are the caller's to report beforehand)."""
    prepared = prepare(request)
    try:
        return submit_prepared(connection, prepared, progress, cancel)
    finally:
        prepared.cleanup()


class JobWatcher:
    """Polls one job: DescribeExecution plus one frame listing a poll; the plan is read once."""

    def __init__(self, connection: Connection, job: JobRef) -> None:
        self.connection = connection
        self.job = job
        self._sfn = connection.client("stepfunctions")
        self._s3 = connection.client("s3")
        self._frames_total: int | None = None
        self.calls = 0

    def poll(self) -> JobStatus:
        self.calls += 1
        described = self._sfn.describe_execution(executionArn=self.job.execution_arn)
        state = described["status"]
        status = JobStatus(
            self.job.job_id,
            state,
            "counting frames",
            started=described.get("startDate"),
            stopped=described.get("stopDate"),
        )
        if state == "SUCCEEDED":
            status.output = json.loads(described.get("output") or "{}")
            self._frames_total = status.output.get("frames", {}).get("count", self._frames_total)
            status.video_key = S3Uri.parse(status.output["videoUri"]).key if status.output.get("videoUri") else None
        if self._frames_total is None:
            self._frames_total = self._read_frame_total()
        status.frames_total = self._frames_total
        if self._frames_total is not None:
            status.frames_done, status.last_frame = self._count_frames()
            status.phase = "rendering" if status.frames_done < self._frames_total else "stitching"
        if state == "SUCCEEDED":
            status.phase = "done"
        elif state == "ABORTED":
            status.phase, status.error, status.cause = "cancelled", "JobCancelled", "the job was cancelled"
        elif state in TERMINAL:
            status.phase = "failed"
            status.error = described.get("error") or state
            status.cause = self._failure_cause(described.get("cause"))
        return status

    def _read_frame_total(self) -> int | None:
        self.calls += 1
        try:
            body = self._s3.get_object(Bucket=self.job.bucket, Key=plan_key(self.job.job_id))["Body"].read()
        except botocore.exceptions.ClientError:
            return None  # not planned yet
        plan = json.loads(body)
        return len(range(plan["frame_start"], plan["frame_end"] + 1, plan["frame_step"]))

    def _count_frames(self) -> tuple[int, int | None]:
        frames: list[int] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.job.bucket, Prefix=frames_prefix(self.job.job_id)):
            self.calls += 1
            frames.extend(n for item in page.get("Contents", []) if (n := frame_from_key(item["Key"])) is not None)
        return len(frames), (max(frames) if frames else None)

    def _failure_cause(self, execution_cause: str | None) -> str:
        """The worker's own account of a failure (``jobs/<id>/errors/``) beats Batch's job description."""
        listing = self._s3.list_objects_v2(Bucket=self.job.bucket, Prefix=errors_prefix(self.job.job_id))
        records = sorted(listing.get("Contents", []), key=lambda item: item["LastModified"])
        if records:
            record = json.loads(self._s3.get_object(Bucket=self.job.bucket, Key=records[-1]["Key"])["Body"].read())
            where = f" (frame {record['frame']})" if record.get("frame") is not None else ""
            return f"{record.get('error', 'Error')}{where}: {record.get('message', '')}"
        return readable_cause(execution_cause)


def readable_cause(cause: str | None) -> str:
    """The human part of an execution's cause: a Lambda error's message, a Batch job's status reason."""
    if not cause:
        return "no cause given"
    try:
        described = json.loads(cause)
    except ValueError:
        return cause
    if not isinstance(described, dict):
        return cause
    for key in ("errorMessage", "StatusReason", "statusReason"):
        if described.get(key):
            return str(described[key])
    return cause


def wait(
    connection: Connection,
    job: JobRef,
    on_status: Callable[[JobStatus], None] | None = None,
    poll_interval: float | Callable[[JobStatus], float] = 10.0,
    cancel: threading.Event | None = None,
) -> JobStatus:
    """Polls until the job ends; ``poll_interval`` is seconds, or a function of the last status giving them."""
    watcher = JobWatcher(connection, job)
    while True:
        status = watcher.poll()
        if on_status is not None:
            on_status(status)
        if status.finished:
            return status
        delay = poll_interval(status) if callable(poll_interval) else poll_interval
        if cancel is not None and cancel.wait(delay):
            stop(connection, job)
        elif cancel is None:
            time.sleep(delay)


def stop(connection: Connection, job: JobRef, reason: str = "cancelled by the artist") -> None:
    """StopExecution; the state machine's Batch tasks are terminated with it."""
    try:
        connection.client("stepfunctions").stop_execution(
            executionArn=job.execution_arn, error="JobCancelled", cause=reason
        )
    except botocore.exceptions.ClientError as error:
        raise RenderOnAwsError(f"cannot cancel {job.job_id}: {error}", name="CancelFailed") from error


def download(
    connection: Connection,
    job: JobRef,
    directory: Path,
    frames: bool = False,
    on_skipped: Callable[[SkippedKey], None] | None = None,
) -> list[Path]:
    """Downloads the video (and with ``frames`` every frame) into ``directory``; returns the video first.

    Frame keys that are not safe local names are skipped, each reported to ``on_skipped`` (default: logged).
    """
    status = JobWatcher(connection, job).poll()
    status.raise_for_failure()
    if status.state != "SUCCEEDED" or not status.video_key:
        raise InvalidInput(f"job {job.job_id} is {status.phase}: nothing to download yet")
    s3 = connection.client("s3")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        video = Path(download_paths.local_path(directory, job_prefix(job.job_id), status.video_key))
    except download_paths.UnsafeKey as reason:
        raise UnsafeDownloadKey(f"not downloading the video {status.video_key!r}: {reason}") from None
    video.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(job.bucket, status.video_key, str(video))
    paths = [video]
    if frames:
        fetched, skipped = download_frames(s3, job.bucket, job.job_id, directory / f"{job.job_id}-frames")
        paths.extend(fetched)
        for item in skipped:
            (on_skipped or _log_skipped)(item)
    return paths


def download_frames(s3: Any, bucket: str, job_id: str, target: Path) -> tuple[list[Path], list[SkippedKey]]:
    """Downloads every key under the job's frames prefix into ``target``, sub-folders kept.

    The keys are whatever is in the bucket, so :func:`download_paths.plan` decides where each may go: a key that
    would escape ``target``, be no valid Windows name, or overwrite another key's file is skipped and returned.
    """
    target.mkdir(parents=True, exist_ok=True)
    prefix = frames_prefix(job_id)
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]
    planned = download_paths.plan(target, prefix, keys)

    def fetch(item: tuple[str, str]) -> Path:
        key, local = item
        path = Path(local)
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, local)
        return path

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(fetch, planned.files)), planned.skipped


def _log_skipped(skipped: SkippedKey) -> None:
    logging.getLogger(__name__).warning("%s: %s", skipped.name, skipped)


_JOB_ID_IN_ARN = re.compile(r":execution:[^:]+:(?P<job>[^:]+)$")


def job_id_of(execution_arn: str) -> str:
    match = _JOB_ID_IN_ARN.search(execution_arn)
    if not match:
        raise InvalidInput(f"not an execution ARN: {execution_arn!r}")
    return match.group("job")
