"""Following a job: its state, phase and frames from DescribeExecution and one listing of its frames a poll.

Progress comes from S3 (each rendered frame appears at once) and from DescribeExecution: at most two calls a
poll, so the AWS polling interval keeps a job within 12 AWS calls a minute. The plan is read once.
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
from render_contract.errors import InvalidInput, JobCancelled, RenderFailed, from_name, readable_cause
from render_contract.layout import S3Uri, frame_from_key, frames_prefix, plan_key
from render_contract.phases import EXECUTION_TERMINAL_STATES, Phase
from render_contract.plan import Plan

from .connection import Connection
from .jobref import JobRef
from .starting import stop

AWS_POLL_SECONDS = 10.0
"""Polling on AWS (CLI and add-on): two calls a poll, so 12 AWS calls a minute while a job renders."""
LOCAL_POLL_SECONDS = 0.5
"""Polling on the local cloud, whose polls cost this machine's CPU, which the renders need..."""
LOCAL_POLL_MAX_SECONDS = 5.0
"""...so while the time left is long, the local cloud is polled less often, up to this."""


def poll_interval(is_local: bool, phase: str = "", eta: float | None = None) -> float:
    """Seconds until the next poll: fixed on AWS; on the local cloud, often only near the end of a render."""
    if not is_local:
        return AWS_POLL_SECONDS
    if phase == Phase.RENDERING and eta:
        return min(LOCAL_POLL_MAX_SECONDS, max(LOCAL_POLL_SECONDS, eta / 4))
    return LOCAL_POLL_SECONDS


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
    python_use: tuple[str, ...] = ()
    """What in the file needs Python that the farm does not run (the job did not allow scripts): it renders
    differently from the artist's Blender. From the plan, which the frame counter wrote."""
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
        self._python_use: tuple[str, ...] = ()
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
            if self._planned is None and {"start", "end", "step"} <= frames.keys():
                self._planned = list(range(frames["start"], frames["end"] + 1, frames["step"]))
            status.video_key = S3Uri.parse(status.output["videoUri"]).key if status.output.get("videoUri") else None
        if self._frames_total is None:
            self._frames_total = self._read_frame_total()
        status.frames_total = self._frames_total
        status.python_use = self._python_use
        status.plan = self._plan
        if self._frames_total is not None:
            present = self._count_frames()
            status.frames_done, status.last_frame = len(present), (max(present) if present else None)
            if self._planned is not None:
                status.longest_gap = longest_gap(self._planned, present)
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

    def _read_frame_total(self) -> int | None:
        self.calls += 1
        try:
            body = self._s3.get_object(Bucket=self.job.bucket, Key=plan_key(self.job.job_id))["Body"].read()
        except botocore.exceptions.ClientError:
            return None  # not planned yet
        plan = json.loads(body)
        try:
            self._plan = Plan.from_json(body)
        except (InvalidInput, TypeError, ValueError):  # a plan of another version: progress still works
            self._plan = None
        self._planned = list(range(plan["frame_start"], plan["frame_end"] + 1, plan["frame_step"]))
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
