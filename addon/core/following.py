"""Following a job: its state, phase and frames from DescribeExecution and one listing of its frames a poll.

Progress comes from S3 (each rendered frame appears at once) and from DescribeExecution: at most two calls a
poll, so the AWS polling interval keeps a job within 12 AWS calls a minute. The plan is read once.

Waiting for capacity: every few polls, instead of listing the frames, the watcher looks at the execution's
current Batch job (its id from the execution history's TaskSubmitted event, found once per step; then one
DescribeJobs a check). A job RUNNABLE with none of it running, for CAPACITY_NOTICE_SECONDS or with Batch's own
``CAPACITY:`` reason, is shown as ``waiting for capacity (N min): <reason>``; after the admin's limit
(CapacityWaitSeconds) the queue cancels it and the execution ends with ``NoCapacity``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import botocore.exceptions
from render_contract.errors import (
    BATCH_CAPACITY_PREFIX,
    InvalidInput,
    JobCancelled,
    RenderFailed,
    from_name,
    readable_cause,
)
from render_contract.layout import S3Uri, frame_from_key, frames_prefix, plan_key
from render_contract.phases import EXECUTION_TERMINAL_STATES, Phase
from render_contract.plan import Plan

from . import history
from .connection import Connection
from .jobref import JobRef
from .starting import stop

AWS_POLL_SECONDS = 10.0
"""Polling on AWS (CLI and add-on): two calls a poll, so 12 AWS calls a minute while a job renders."""
LOCAL_POLL_SECONDS = 0.5
"""Polling on the local cloud, whose polls cost this machine's CPU, which the renders need..."""
LOCAL_POLL_MAX_SECONDS = 5.0
"""...so while the time left is long, the local cloud is polled less often, up to this."""
CAPACITY_NOTICE_SECONDS = 180.0
"""A Batch job RUNNABLE this long with none of it running is shown as waiting for capacity: Batch usually has an
instance up within one to three minutes, so longer means no Spot (or GPU) capacity is to be had, or MaxVcpus
is reached by other jobs. Shown at once when Batch itself gives a ``CAPACITY:`` reason."""
CAPACITY_CHECK_EVERY = 6
"""Polls per capacity check (once a minute on AWS). A check takes the place of that poll's frame listing (one
call for one), so a job stays within 12 AWS calls a minute."""
NO_CAPACITY_REASON = "no instance has started it yet (Spot or GPU capacity short, or the stack's MaxVcpus in use)"


def poll_interval(is_local: bool, phase: str = "", eta: float | None = None) -> float:
    """Seconds until the next poll: fixed on AWS; on the local cloud, often only near the end of a render."""
    if not is_local:
        return AWS_POLL_SECONDS
    if phase == Phase.RENDERING and eta:
        return min(LOCAL_POLL_MAX_SECONDS, max(LOCAL_POLL_SECONDS, eta / 4))
    return LOCAL_POLL_SECONDS


@dataclass(frozen=True)
class CapacityWait:
    """A render or stitch job waiting in Batch's RUNNABLE state with none of it running."""

    seconds: float
    """How long it has waited (since it was submitted, or since its last attempt ended)."""
    reason: str
    """Batch's status reason (``CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - ...``), or what the wait suggests."""

    def describe(self) -> str:
        return f"waiting for capacity ({int(self.seconds // 60)} min): {self.reason}"


@dataclass
class JobStatus:
    job_id: str
    state: str
    """The execution's status: RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED."""
    phase: Phase
    frames_done: int = 0
    frames_total: int | None = None
    last_frame: int | None = None
    longest_gap: int | None = None
    """The longest run of planned frames not yet in S3 (None until the plan is known): how far the frames done
    are from spanning the shot."""
    present: frozenset[int] = frozenset()
    """The frames in S3 (from the listing the poll makes): which previews the flipbook may fetch."""
    planned: range | None = None
    """The shot's frames (None until the plan is known)."""
    fps: float | None = None
    """The scene's frame rate, from the plan: the flipbook plays at it."""
    python_use: tuple[str, ...] = ()
    """What in the file needs Python that the farm does not run (the job did not allow scripts): it renders
    differently from the artist's Blender. From the plan, which the frame counter wrote."""
    blender: str = ""
    """The Blender version the job renders with (``"4.2.23"``, the plan's runtime); empty until planned."""
    runtime_notices: tuple[str, ...] = ()
    """``"Name: message"`` warnings about that runtime (another series than the file's, a version mismatch)."""
    waiting_for_capacity: CapacityWait | None = None
    """Set while the current Batch job waits for an instance (see CAPACITY_NOTICE_SECONDS)."""
    plan: Plan | None = None
    """The job's plan once the frame counter wrote it (what will come back: :mod:`.deliveries`)."""
    error: str | None = None
    cause: str | None = None
    video_key: str | None = None
    started: datetime | None = None
    stopped: datetime | None = None
    output: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in EXECUTION_TERMINAL_STATES

    def raise_for_failure(self) -> None:
        if self.state == "ABORTED":
            raise JobCancelled("the job was cancelled")
        if self.finished and self.state != "SUCCEEDED":
            raise from_name(self.error or RenderFailed.__name__, self.cause or self.state)


class JobWatcher:
    """Polls one job: DescribeExecution plus one frame listing a poll; the plan is read once."""

    def __init__(self, connection: Connection, job: JobRef) -> None:
        self.connection = connection
        self.job = job
        self._sfn = connection.client("stepfunctions")
        self._s3 = connection.client("s3")
        self._frames_total: int | None = None
        self._planned: list[int] | None = None
        self._fps: float | None = None
        self._python_use: tuple[str, ...] = ()
        self._blender = ""
        self._runtime_notices: tuple[str, ...] = ()
        self._plan_seen = False
        self._batch = connection.client("batch")
        self._present: set[int] = set()
        self._running_polls = 0
        self._batch_job_id: str | None = None
        self._capacity: CapacityWait | None = None
        self._plan: Plan | None = None
        self.calls = 0

    def poll(self) -> JobStatus:
        self.calls += 1
        described = self._sfn.describe_execution(executionArn=self.job.execution_arn)
        state = described["status"]
        status = JobStatus(
            self.job.job_id,
            state,
            Phase.COUNTING_FRAMES,
            started=described.get("startDate"),
            stopped=described.get("stopDate"),
        )
        if state == "SUCCEEDED":
            status.output = json.loads(described.get("output") or "{}")
            self._frames_total = status.output.get("frames", {}).get("count", self._frames_total)
            frames = status.output.get("frames", {})
            if self._fps is None and isinstance(status.output.get("fps"), int | float):
                self._fps = float(status.output["fps"])
            if self._planned is None and {"start", "end", "step"} <= frames.keys():
                self._planned = list(range(frames["start"], frames["end"] + 1, frames["step"]))
            status.video_key = S3Uri.parse(status.output["videoUri"]).key if status.output.get("videoUri") else None
        if not self._plan_seen:  # once: the plan also says which Blender renders (a finished job's `status` too)
            total = self._read_frame_total()
            self._frames_total = total if self._frames_total is None else self._frames_total
        status.frames_total = self._frames_total
        status.python_use = self._python_use
        status.blender, status.runtime_notices = self._blender, self._runtime_notices
        status.plan = self._plan
        if self._frames_total is not None:
            self._running_polls += 1 if state == "RUNNING" else 0
            # The first poll lists the frames; the job is looked up sooner (every 3rd) than it is described.
            every = CAPACITY_CHECK_EVERY if self._batch_job_id else CAPACITY_CHECK_EVERY // 2
            if state == "RUNNING" and self._running_polls % every == 0:
                self._capacity = self._check_capacity()
                present = self._present
            else:
                present = self._present = self._count_frames()
            status.waiting_for_capacity = self._capacity if state == "RUNNING" else None
            status.frames_done, status.last_frame = len(present), (max(present) if present else None)
            status.present = frozenset(present)
            if self._planned is not None:
                status.longest_gap = longest_gap(self._planned, present)
                status.planned = _as_range(self._planned)
            status.fps = self._fps
            status.phase = Phase.RENDERING if status.frames_done < self._frames_total else Phase.STITCHING
        if state == "SUCCEEDED":
            status.phase = Phase.DONE
        elif state == "ABORTED":
            status.phase, status.error, status.cause = Phase.CANCELLED, JobCancelled.__name__, "the job was cancelled"
        elif state in EXECUTION_TERMINAL_STATES:
            # The execution's error is the worker's own name (the state machine's explain step raised it).
            status.phase = Phase.FAILED
            status.error = described.get("error") or state
            status.cause = readable_cause(described.get("cause"))
        return status

    def _check_capacity(self) -> CapacityWait | None:
        """One call: find the execution's current Batch job, or describe it (see the module's docstring)."""
        self.calls += 1
        if self._batch_job_id is None:
            self._batch_job_id = self._current_batch_job()
            return self._capacity
        job_id = self._batch_job_id
        try:
            jobs = self._batch.describe_jobs(jobs=[job_id, f"{job_id}:0"])["jobs"]
        except botocore.exceptions.ClientError:
            return None
        by_id = {job["jobId"]: job for job in jobs}
        job = by_id.get(job_id)
        if job is None or job["status"] in ("SUCCEEDED", "FAILED"):
            self._batch_job_id = None  # the step ended: the next check looks for the next step's job
            return None
        return capacity_wait(job, by_id.get(f"{job_id}:0"), time.time())

    def _current_batch_job(self) -> str | None:
        """The newest Batch job the execution submitted (one GetExecutionHistory page: the history is short)."""
        try:
            submitted = history.batch_job_ids(self.connection, self.job)
        except botocore.exceptions.ClientError:
            return None
        return submitted[-1] if submitted else None

    def _read_frame_total(self) -> int | None:
        self.calls += 1
        try:
            body = self._s3.get_object(Bucket=self.job.bucket, Key=plan_key(self.job.job_id))["Body"].read()
        except botocore.exceptions.ClientError:
            return None  # not planned yet
        plan = json.loads(body)
        self._plan_seen = True
        self._blender = str(plan.get("blender_runtime_version") or "")
        self._runtime_notices = tuple(str(item) for item in plan.get("runtime_notices", ()))
        try:
            self._plan = Plan.from_json(body)
        except (InvalidInput, TypeError, ValueError):  # a plan of another version: progress still works
            self._plan = None
        self._planned = list(range(plan["frame_start"], plan["frame_end"] + 1, plan["frame_step"]))
        if plan.get("fps_num") and plan.get("fps_den"):
            self._fps = plan["fps_num"] / plan["fps_den"]
        if not plan.get("allow_scripts"):
            self._python_use = tuple(str(item) for item in plan.get("python_use", ()))
        return len(self._planned)

    def _count_frames(self) -> set[int]:
        frames: set[int] = set()
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.job.bucket, Prefix=frames_prefix(self.job.job_id)):
            self.calls += 1
            frames.update(n for item in page.get("Contents", []) if (n := frame_from_key(item["Key"])) is not None)
        return frames


def _as_range(planned: list[int]) -> range:
    """The planned frames as the range they are (start, end, step)."""
    step = planned[1] - planned[0] if len(planned) > 1 else 1
    return range(planned[0], planned[-1] + 1, step) if planned else range(0)


def capacity_wait(job: dict[str, Any], first_child: dict[str, Any] | None, now: float) -> CapacityWait | None:
    """Whether a described Batch job (an array's parent with its first child, or a plain job) waits for capacity.

    None while any of it runs (or starts), when nothing of it is RUNNABLE, or when it has waited less than
    CAPACITY_NOTICE_SECONDS and Batch gives no ``CAPACITY:`` reason."""
    summary = (job.get("arrayProperties") or {}).get("statusSummary")
    if summary is not None:
        if summary.get("RUNNING", 0) or summary.get("STARTING", 0) or not summary.get("RUNNABLE", 0):
            return None
        waiting = first_child if first_child is not None and first_child.get("status") == "RUNNABLE" else job
    elif job.get("status") == "RUNNABLE":
        waiting = job
    else:
        return None
    since_ms = max([waiting.get("createdAt", 0)] + [a.get("stoppedAt", 0) for a in waiting.get("attempts", [])])
    seconds = max(0.0, now - since_ms / 1000) if since_ms else 0.0
    reason = str(waiting.get("statusReason") or job.get("statusReason") or "")
    if reason.startswith(BATCH_CAPACITY_PREFIX) or seconds >= CAPACITY_NOTICE_SECONDS:
        return CapacityWait(seconds, reason if reason.startswith(BATCH_CAPACITY_PREFIX) else NO_CAPACITY_REASON)
    return None


def longest_gap(planned: list[int], present: set[int]) -> int:
    """The longest run of consecutive planned frames (in plan order, i.e. by number) missing from ``present``."""
    best = run = 0
    for frame in planned:
        run = 0 if frame in present else run + 1
        best = max(best, run)
    return best


def wait(
    connection: Connection,
    job: JobRef,
    on_status: Callable[[JobStatus], None] | None = None,
    poll_interval: float | Callable[[JobStatus], float] = AWS_POLL_SECONDS,
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
