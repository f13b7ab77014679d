"""Background work for the Blender add-on, without bpy: one thread per job, results handed over as snapshots.

Blender's main thread draws the UI; a network call there freezes it (Deadline Cloud's submitter does, for
minutes on a slow upload). So every call to AWS happens in a :class:`JobTask` thread, which publishes immutable
:class:`JobView` snapshots through a callback; the add-on queues them on a :class:`MainThreadQueue` and a
``bpy.app.timers`` function drains it. The main thread only ever copies snapshots into the UI.

A job's polling keeps within :data:`AWS_CALLS_PER_MINUTE` on AWS (a sliding :class:`CallBudget`), the latest
frame's preview download included; on a local endpoint it polls every second without a budget.
"""

from __future__ import annotations

import collections
import queue
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import botocore.exceptions

from . import history, jobs
from .connection import Connection, ConnectionSettings
from .errors import JobCancelled, RenderOnAwsError
from .layout import errors_prefix, frame_key, frames_prefix
from .progress import EtaEstimator, describe, format_duration

AWS_POLL_SECONDS = jobs.AWS_POLL_SECONDS
LOCAL_POLL_SECONDS = 1.0
AWS_CALLS_PER_MINUTE = 12
AWS_PREVIEW_SECONDS = 30.0
"""On AWS a new preview frame is fetched at most this often (it shares the 12 calls a minute with polling)."""
UPLOAD_UPDATES_PER_SECOND = 10.0
FINISHED_PHASES = ("done", "failed", "cancelled", "stopped")


def poll_interval(settings: ConnectionSettings) -> float:
    return LOCAL_POLL_SECONDS if settings.is_local else AWS_POLL_SECONDS


class MainThreadQueue:
    """Callables handed from background threads to the main thread, run when the main thread drains."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()

    def call(self, function: Callable[..., None], *args: Any) -> None:
        self._queue.put((function, args))

    def drain(self, max_seconds: float = 0.005) -> int:
        """Runs queued calls until none is left or ``max_seconds`` passed (the rest waits for the next tick)."""
        deadline = time.perf_counter() + max_seconds
        count = 0
        while True:
            try:
                function, args = self._queue.get_nowait()
            except queue.Empty:
                return count
            try:
                function(*args)
            except Exception:  # one bad update must not stop the timer that serves every job
                traceback.print_exc()
            count += 1
            if time.perf_counter() > deadline:
                return count


class CallBudget:
    """At most ``limit`` calls in any ``window`` seconds: tells a poller how long to wait before its next calls."""

    def __init__(
        self, limit: int = AWS_CALLS_PER_MINUTE, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._calls: collections.deque[float] = collections.deque()
        self.log: list[float] = []
        """Every call's time, for measurements (the benchmark's calls a minute)."""

    def _trim(self, now: float) -> None:
        while self._calls and self._calls[0] <= now - self.window:
            self._calls.popleft()

    def spend(self, count: int) -> None:
        now = self.clock()
        for _ in range(max(0, count)):
            self._calls.append(now)
            self.log.append(now)

    def room(self) -> int:
        self._trim(self.clock())
        return self.limit - len(self._calls)

    def delay(self, count: int) -> float:
        """Seconds until ``count`` more calls fit in the window."""
        now = self.clock()
        self._trim(now)
        excess = len(self._calls) + count - self.limit
        if excess <= 0:
            return 0.0
        return max(0.0, self._calls[excess - 1] + self.window - now)


def max_calls_per_window(times: list[float], window: float = 60.0) -> int:
    """The most calls in any ``window`` seconds of ``times`` (sorted)."""
    best = 0
    start = 0
    for end, moment in enumerate(times):
        while times[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best


_CONNECTIONS: dict[ConnectionSettings, Connection] = {}
_CONNECTIONS_LOCK = threading.Lock()


def connect(settings: ConnectionSettings, refresh: bool = False) -> Connection:
    """The Connection for these settings, shared by every thread, with the stack's outputs read.

    One per settings: its clients are made once (botocore's model parsing holds the GIL) and are thread-safe.
    The outputs (DescribeStacks) are cached in memory only, never on disk; ``refresh`` reads them again.
    """
    with _CONNECTIONS_LOCK:
        connection = None if refresh else _CONNECTIONS.get(settings)
    if connection is None:
        connection = Connection(settings)
        connection.outputs  # noqa: B018 - read now, on this background thread, so failures surface here
        with _CONNECTIONS_LOCK:
            _CONNECTIONS[settings] = connection
    return connection


def forget_outputs() -> None:
    with _CONNECTIONS_LOCK:
        _CONNECTIONS.clear()


def test_connection(settings: ConnectionSettings) -> str:
    """Plain words on success; raises the core's named errors (StackNotFound, ConnectionFailed) otherwise."""
    connection = connect(settings, refresh=True)
    where = settings.endpoint or f"AWS {connection.session.region_name}"
    return f"Connected: stack {settings.stack!r} on {where}, bucket {connection.outputs.bucket}"


@dataclass(frozen=True)
class JobView:
    """One moment of a job, as the panel shows it. Immutable: threads hand over copies, never share state."""

    key: str
    job_name: str
    phase: str = "preparing"
    text: str = "preparing"
    factor: float = 0.0
    eta: float | None = None
    job_id: str = ""
    execution_arn: str = ""
    error: str = ""
    cause: str = ""
    missing: tuple[str, ...] = ()
    frames_done: int = 0
    frames_total: int = 0
    last_frame: int | None = None
    preview_path: str = ""
    video_path: str = ""
    frames_dir: str = ""
    log_uri: str = ""
    log_group: str = ""
    usage_text: str = ""
    calls: int = 0

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def eta_text(self) -> str:
        return f"ETA {format_duration(self.eta)}" if self.eta is not None else ""


@dataclass
class JobTaskOptions:
    output_dir: Path
    """Downloads go to ``<output_dir>/<job id>/``."""
    preview_dir: Path
    interval: float
    budget: CallBudget | None
    preview_every: float
    download_frames: bool = True
    work_dir: Path | None = None
    """The temporary copy of the .blend; removed once uploaded (or abandoned)."""
    extra: dict[str, Any] = field(default_factory=dict)


def default_options(
    settings: ConnectionSettings, output_dir: Path, preview_dir: Path, work_dir: Path | None = None
) -> JobTaskOptions:
    local = settings.is_local
    return JobTaskOptions(
        output_dir=output_dir,
        preview_dir=preview_dir,
        interval=poll_interval(settings),
        budget=None if local else CallBudget(),
        preview_every=0.0 if local else AWS_PREVIEW_SECONDS,
        work_dir=work_dir,
    )


class JobTask(threading.Thread):
    """Submits (or reattaches to) one job and follows it to the end, in its own daemon thread."""

    def __init__(
        self,
        key: str,
        settings: ConnectionSettings,
        publish: Callable[[JobView], None],
        options: JobTaskOptions,
        *,
        request: jobs.SubmitRequest | None = None,
        job_name: str = "",
        execution_arn: str = "",
    ) -> None:
        super().__init__(name=f"render-on-aws {key}", daemon=True)
        if request is None and not execution_arn:
            raise ValueError("a JobTask needs a request to submit or an execution ARN to follow")
        self.key = key
        self.settings = settings
        self.publish = publish
        self.options = options
        self.request = request
        self.cancel = threading.Event()
        """Set by the artist's Cancel: stops the upload, or the execution (StopExecution) once started."""
        self.shutdown = threading.Event()
        """Set when the add-on is disabled or Blender quits: the thread ends, the job keeps running."""
        self._decided = threading.Event()
        self._allow_missing = False
        self.watcher: jobs.JobWatcher | None = None
        self.preview_calls = 0
        self.view = JobView(
            key,
            job_name or (request.job_name if request and request.job_name else ""),
            execution_arn=execution_arn,
            job_id=jobs.job_id_of(execution_arn) if execution_arn else "",
            phase="preparing" if request else "reattaching",
            text="preparing" if request else "reattaching",
        )
        self._last_upload_post = 0.0

    # ---- main thread -------------------------------------------------------------------------------------
    def decide_missing(self, submit_anyway: bool) -> None:
        self._allow_missing = submit_anyway
        self._decided.set()

    def request_cancel(self) -> None:
        self.cancel.set()
        self._decided.set()

    # ---- the thread ----------------------------------------------------------------------------------------
    def _post(self, **changes: Any) -> None:
        self.view = replace(self.view, **changes)
        self.publish(self.view)

    def run(self) -> None:
        try:
            connection = connect(self.settings)
            job = self._submit(connection) if self.request is not None else self._job_ref(connection)
            if job is None:
                return
            status = self._follow(connection, job)
            if status is not None:
                self._finish(connection, job, status)
        except JobCancelled as error:
            self._post(phase="cancelled", text=f"cancelled: {error.message}", error=error.name, cause=error.message)
        except RenderOnAwsError as error:
            self._post(phase="failed", text=f"failed: {error.name}", error=error.name, cause=error.message)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            self._post(phase="failed", text="failed: ConnectionFailed", error="ConnectionFailed", cause=str(error))
        except Exception as error:  # shown in the panel rather than lost in a thread's traceback
            traceback.print_exc(file=sys.stderr)
            self._post(phase="failed", text="failed: UnexpectedError", error=type(error).__name__, cause=str(error))
        finally:
            if self.options.work_dir is not None:
                shutil.rmtree(self.options.work_dir, ignore_errors=True)

    def _job_ref(self, connection: Connection) -> jobs.JobRef:
        return jobs.JobRef(self.view.job_id, self.view.execution_arn, connection.outputs.bucket)

    def _submit(self, connection: Connection) -> jobs.JobRef | None:
        assert self.request is not None
        self._post(phase="preparing", text="preparing: finding the files the scene uses")
        prepared = jobs.prepare(self.request)
        try:
            if not self.view.job_name:
                self.view = replace(self.view, job_name=prepared.job_name)
            if prepared.missing:
                self._post(
                    phase="missing files",
                    text=f"{len(prepared.missing)} file(s) the scene uses are missing",
                    missing=tuple(f"{item.path} (used by {item.used_by})" for item in prepared.missing),
                )
                while not self._decided.wait(0.2):
                    if self.shutdown.is_set():
                        return None
                if self.cancel.is_set() or not self._allow_missing:
                    self._post(phase="stopped", text="stopped before uploading (missing files)", missing=())
                    return None
            if self.cancel.is_set():
                raise JobCancelled("cancelled before uploading")
            total = prepared.total_bytes
            self._post(phase="uploading", text=f"uploading 0.0/{total / 1e6:.1f} MB", missing=())
            job = jobs.submit_prepared(connection, prepared, progress=self._on_upload, cancel=self.cancel)
        finally:
            prepared.cleanup()
        self._post(
            phase="counting frames",
            text="counting frames",
            factor=0.0,
            job_id=job.job_id,
            execution_arn=job.execution_arn,
        )
        return job

    def _on_upload(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last_upload_post < 1.0 / UPLOAD_UPDATES_PER_SECOND:
            return
        self._last_upload_post = now
        factor = done / total if total else 1.0
        self._post(phase="uploading", text=f"uploading {done / 1e6:.1f}/{total / 1e6:.1f} MB", factor=factor)

    def _follow(self, connection: Connection, job: jobs.JobRef) -> jobs.JobStatus | None:
        watcher = self.watcher = jobs.JobWatcher(connection, job)
        budget = self.options.budget
        eta = EtaEstimator()
        stopped = False
        pending_preview: int | None = None
        shown_preview: int | None = None
        last_preview = -1e9
        extension: str | None = None
        while True:
            if (
                pending_preview is not None
                and time.monotonic() - last_preview >= self.options.preview_every
                and (budget is None or budget.room() >= 3)
            ):
                extension = self._fetch_preview(connection, job, pending_preview, extension, budget)
                shown_preview, pending_preview, last_preview = pending_preview, None, time.monotonic()
            before = watcher.calls
            status = watcher.poll()
            if budget is not None:
                budget.spend(watcher.calls - before)
            if status.last_frame is not None and status.last_frame != shown_preview:
                pending_preview = status.last_frame
            self._post_status(status, eta.update(status.frames_done, status.frames_total))
            if status.finished:
                return status
            if self.cancel.is_set() and not stopped:
                self._post(text="cancelling")
                jobs.stop(connection, job)
                stopped = True
                if budget is not None:
                    budget.spend(1)
            wait = 0.5 if stopped else self.options.interval
            if budget is not None:
                wait = max(wait, budget.delay(2 + (1 if pending_preview is not None else 0)))
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                if self.shutdown.wait(min(left, 0.25)):
                    return None
                if self.cancel.is_set() and not stopped:
                    break

    def _post_status(self, status: jobs.JobStatus, eta: float | None) -> None:
        total = status.frames_total or 0
        factor = status.frames_done / total if total else 0.0
        if status.phase == "done":
            factor = 1.0
        text = describe(status, eta)
        if status.phase == "rendering" and total:
            text = f"rendering {status.frames_done}/{total} frames"
        self._post(
            phase=status.phase if status.phase != "done" else "downloading",
            text=text if status.phase != "done" else "downloading the video and frames",
            factor=factor,
            eta=eta if status.phase == "rendering" else None,
            frames_done=status.frames_done,
            frames_total=total,
            last_frame=status.last_frame,
            error=status.error or "",
            cause=status.cause or "",
            calls=self.watcher.calls if self.watcher else 0,
        )

    def _fetch_preview(
        self,
        connection: Connection,
        job: jobs.JobRef,
        frame: int,
        extension: str | None,
        budget: CallBudget | None,
    ) -> str | None:
        """Downloads one frame for the panel's preview; a failure only means no preview this time."""
        s3 = connection.client("s3")
        calls = 0
        try:
            if extension is None:
                calls += 1
                listing = s3.list_objects_v2(
                    Bucket=job.bucket, Prefix=f"{frames_prefix(job.job_id)}{frame:06d}.", MaxKeys=1
                )
                keys = [item["Key"] for item in listing.get("Contents", [])]
                if not keys:
                    return None
                extension = keys[0].rsplit(".", 1)[-1]
            target = self.options.preview_dir / job.job_id / f"{frame:06d}.{extension}"
            target.parent.mkdir(parents=True, exist_ok=True)
            calls += 1
            s3.download_file(job.bucket, frame_key(job.job_id, frame, extension), str(target))
            self._post(preview_path=str(target))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError):
            pass
        finally:
            self.preview_calls += calls
            if budget is not None:
                budget.spend(calls)
        return extension

    def _finish(self, connection: Connection, job: jobs.JobRef, status: jobs.JobStatus) -> None:
        log_uri = f"s3://{job.bucket}/{errors_prefix(job.job_id)}"
        log_group = "" if self.settings.is_local else connection.outputs.values.get("LogGroupName", "")
        usage_text = self._usage_text(connection, job)
        if status.state == "SUCCEEDED":
            target = self.options.output_dir / job.job_id
            target.mkdir(parents=True, exist_ok=True)
            paths = jobs.download(connection, job, target, frames=self.options.download_frames)
            frames_dir = target / f"{job.job_id}-frames"
            downloaded_frames = sorted(path for path in paths[1:] if path.parent == frames_dir)
            if downloaded_frames:  # the last frame is the preview now, whether or not polling caught it
                self._post(preview_path=str(downloaded_frames[-1]))
            self._post(
                phase="done",
                text=f"done: {status.frames_total or 0} frames",
                factor=1.0,
                video_path=str(paths[0]),
                frames_dir=str(frames_dir if frames_dir.is_dir() else target),
                usage_text=usage_text,
            )
        elif status.state == "ABORTED":
            self._post(phase="cancelled", text="cancelled", usage_text=usage_text, log_uri=log_uri)
        else:
            self._post(
                phase="failed",
                text=f"failed: {status.error}",
                usage_text=usage_text,
                log_uri=log_uri,
                log_group=log_group,
            )

    def _usage_text(self, connection: Connection, job: jobs.JobRef) -> str:
        try:
            return history.usage(connection, job).describe(with_cost=not self.settings.is_local)
        except RenderOnAwsError as error:
            return f"compute unknown: {error.message}"
