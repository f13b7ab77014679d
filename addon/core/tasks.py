"""Background work for the Blender add-on, without bpy: one thread per job, results handed over as snapshots.

Blender's main thread draws the UI; a network call there freezes it (Deadline Cloud's submitter does, for
minutes on a slow upload). So every call to AWS happens in a :class:`JobTask` thread, which publishes immutable
:class:`JobView` snapshots through a callback; the add-on queues them on a
:class:`~.mainthread.MainThreadQueue` and a ``bpy.app.timers`` function drains it. The main thread only ever
copies snapshots into the UI.

A job's polling keeps within :data:`~.budget.AWS_CALLS_PER_MINUTE` on AWS (a sliding :class:`~.budget.CallBudget`),
the latest frame's preview download included; on a local endpoint it polls as the command line does, without a
budget.
"""

from __future__ import annotations

import logging
import os
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
from render_contract import ids
from render_contract.errors import ConnectionFailed, JobCancelled, RenderOnAwsError, UnexpectedError
from render_contract.layout import errors_prefix
from render_contract.phases import FINISHED_PHASES, Phase
from render_contract.plan import Plan

from . import deliveries, history
from .budget import CallBudget
from .connection import Connection, ConnectionSettings, connect
from .downloading import download_job
from .following import JobStatus, JobWatcher, poll_interval
from .jobref import JobRef
from .preparing import SubmitRequest, prepare
from .previews import fetch_preview
from .progress import EtaEstimator, describe, format_duration
from .starting import resume, stop, submit_prepared

log = logging.getLogger(__name__)
AWS_PREVIEW_SECONDS = 30.0
"""On AWS a new preview frame is fetched at most this often (it shares the 12 calls a minute with polling)."""
UPLOAD_UPDATES_PER_SECOND = 10.0


@dataclass(frozen=True)
class JobView:
    """One moment of a job, as the panel shows it. Immutable: threads hand over copies, never share state."""

    key: str
    job_name: str
    phase: str = Phase.PREPARING
    text: str = Phase.PREPARING
    factor: float = 0.0
    eta: float | None = None
    job_id: str = ""
    execution_arn: str = ""
    error: str = ""
    cause: str = ""
    missing: tuple[str, ...] = ()
    python_use: tuple[str, ...] = ()
    """What needs Python that the farm does not run for this job (from the plan)."""
    deliveries: tuple[str, ...] = ()
    """What will come back (formats, names, where, video), from the plan: :func:`.deliveries.describe`."""
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
    interval: float | None
    """Seconds between polls; None: as the command line polls the local cloud (often only near the end)."""
    budget: CallBudget | None
    preview_every: float
    download_frames: bool = True
    output_root: Path | None = None
    """The .blend's folder to download into the scene's output paths (as Render Animation writes); None: into
    ``<output_dir>/<job id>/``."""
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
        interval=None if local else poll_interval(local),
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
        request: SubmitRequest | None = None,
        job_name: str = "",
        execution_arn: str = "",
        resume: bool = False,
    ) -> None:
        super().__init__(name=f"render-on-aws {key}", daemon=True)
        if request is None and not execution_arn:
            raise ValueError("a JobTask needs a request to submit or an execution ARN to follow")
        self.key = key
        self.settings = settings
        self.publish = publish
        self.options = options
        self.request = request
        self.resume = resume
        """Run the followed job again (a new execution over the same job) before following it."""
        self.cancel = threading.Event()
        """Set by the artist's Cancel: stops the upload, or the execution (StopExecution) once started."""
        self.shutdown = threading.Event()
        """Set when the add-on is disabled or Blender quits: the thread ends, the job keeps running."""
        self._decided = threading.Event()
        self._allow_missing = False
        self.watcher: JobWatcher | None = None
        self.preview_calls = 0
        self.view = JobView(
            key,
            job_name or (request.job_name if request and request.job_name else ""),
            execution_arn=execution_arn,
            job_id=ids.job_id_of(execution_arn) if execution_arn else "",
            phase=Phase.PREPARING if request else Phase.REATTACHING,
            text=Phase.PREPARING if request else Phase.REATTACHING,
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
            if self.request is not None:
                job = self._submit(connection)
            elif self.resume:
                job = self._resume(connection)
            else:
                job = self._job_ref(connection)
            if job is None:
                return
            status = self._follow(connection, job)
            if status is not None:
                self._finish(connection, job, status)
        except JobCancelled as error:
            self._post(phase=Phase.CANCELLED, text=f"cancelled: {error.message}", error=error.name, cause=error.message)
        except RenderOnAwsError as error:
            self._post_failure(error)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            self._post_failure(ConnectionFailed(str(error)))
        except Exception as error:  # shown in the panel rather than lost in a thread's traceback
            traceback.print_exc(file=sys.stderr)
            self._post_failure(UnexpectedError(f"{type(error).__name__}: {error}"))
        finally:
            if self.options.work_dir is not None:
                shutil.rmtree(self.options.work_dir, ignore_errors=True)

    def _post_failure(self, error: RenderOnAwsError) -> None:
        self._post(phase=Phase.FAILED, text=f"failed: {error.name}", error=error.name, cause=error.message)

    def _resume(self, connection: Connection) -> JobRef:
        self._post(phase=Phase.COUNTING_FRAMES, text="resuming: only the missing frames", error="", cause="")
        job = resume(connection, self.view.job_id)
        self._post(execution_arn=job.execution_arn, text=f"resumed (run {job.run})")
        return job

    def _job_ref(self, connection: Connection) -> JobRef:
        return JobRef(self.view.job_id, self.view.execution_arn, connection.outputs.bucket)

    def _submit(self, connection: Connection) -> JobRef | None:
        assert self.request is not None
        self._post(phase=Phase.PREPARING, text=f"{Phase.PREPARING}: finding the files the scene uses")
        prepared = prepare(self.request)
        try:
            if not self.view.job_name:
                self.view = replace(self.view, job_name=prepared.job_name)
            if prepared.missing:
                self._post(
                    phase=Phase.MISSING_FILES,
                    text=f"{len(prepared.missing)} file(s) the scene uses are missing",
                    missing=tuple(f"{item.path} (used by {item.used_by})" for item in prepared.missing),
                )
                while not self._decided.wait(0.2):
                    if self.shutdown.is_set():
                        return None
                if self.cancel.is_set() or not self._allow_missing:
                    self._post(phase=Phase.STOPPED, text="stopped before uploading (missing files)", missing=())
                    return None
            if self.cancel.is_set():
                raise JobCancelled("cancelled before uploading")
            total = prepared.total_bytes
            self._post(phase=Phase.UPLOADING, text=f"uploading 0.0/{total / 1e6:.1f} MB", missing=())
            job = submit_prepared(connection, prepared, progress=self._on_upload, cancel=self.cancel)
        finally:
            prepared.cleanup()
        self._post(
            phase=Phase.COUNTING_FRAMES,
            text=Phase.COUNTING_FRAMES,
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
        self._post(phase=Phase.UPLOADING, text=f"uploading {done / 1e6:.1f}/{total / 1e6:.1f} MB", factor=factor)

    def _follow(self, connection: Connection, job: JobRef) -> JobStatus | None:
        watcher = self.watcher = JobWatcher(connection, job)
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
            eta_now = eta.update(status.frames_done, status.frames_total)
            self._post_status(status, eta_now)
            if status.finished:
                return status
            if self.cancel.is_set() and not stopped:
                self._post(text="cancelling")
                stop(connection, job)
                stopped = True
                if budget is not None:
                    budget.spend(1)
            interval = self.options.interval
            if interval is None:
                interval = poll_interval(self.settings.is_local, status.phase, eta_now)
            wait = 0.5 if stopped else interval
            if budget is not None:
                wait = max(wait, budget.delay(2 + (1 if pending_preview is not None else 0)))
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                if self.shutdown.wait(min(left, 0.25)):
                    return None
                if self.cancel.is_set() and not stopped:
                    break

    def _post_status(self, status: JobStatus, eta: float | None) -> None:
        total = status.frames_total or 0
        factor = status.frames_done / total if total else 0.0
        if status.phase == Phase.DONE:
            factor = 1.0
        text = describe(status, eta)
        if status.phase == Phase.RENDERING and total:
            text = f"rendering {status.frames_done}/{total} frames"
        self._post(
            phase=status.phase if status.phase != Phase.DONE else Phase.DOWNLOADING,
            text=text if status.phase != Phase.DONE else "downloading the video and frames",
            factor=factor,
            eta=eta if status.phase == Phase.RENDERING else None,
            frames_done=status.frames_done,
            frames_total=total,
            last_frame=status.last_frame,
            python_use=status.python_use,
            deliveries=tuple(deliveries.describe(status.plan, self._destination(status.plan)))
            if status.plan is not None
            else (),
            error=status.error or "",
            cause=status.cause or "",
            calls=self.watcher.calls if self.watcher else 0,
        )

    def _fetch_preview(
        self, connection: Connection, job: JobRef, frame: int, extension: str | None, budget: CallBudget | None
    ) -> str | None:
        """Downloads one frame for the panel's preview; a failure only means no preview this time."""
        preview = fetch_preview(connection.client("s3"), job, frame, extension, self.options.preview_dir)
        self.preview_calls += preview.calls
        if budget is not None:
            budget.spend(preview.calls)
        if preview.path is not None:
            self._post(preview_path=str(preview.path))
        return preview.extension

    def _finish(self, connection: Connection, job: JobRef, status: JobStatus) -> None:
        log_uri = f"s3://{job.bucket}/{errors_prefix(job.job_id)}"
        log_group = "" if self.settings.is_local else connection.outputs.values.get("LogGroupName", "")
        usage_text = self._usage_text(connection, job)
        if status.state == "SUCCEEDED":
            target = self.options.output_dir / job.job_id
            target.mkdir(parents=True, exist_ok=True)
            result = download_job(
                connection,
                job,
                target,
                frames=self.options.download_frames,
                job_folder=target,
                output_root=self.options.output_root,
            )
            for item in result.skipped:
                log.warning("%s: %s", item.name, item)
            paths = result.paths
            frames_dir = result.frames[0].parent if result.frames else target
            if result.frames:  # the last frame is the preview now, whether or not polling caught it
                self._post(preview_path=str(result.frames[-1]))
            self._post(
                phase=Phase.DONE,
                text=f"done: {status.frames_total or 0} frames",
                factor=1.0,
                video_path=str(paths[0]),
                frames_dir=str(frames_dir if frames_dir.is_dir() else target),
                usage_text=usage_text,
            )
        elif status.state == "ABORTED":
            self._post(phase=Phase.CANCELLED, text=Phase.CANCELLED, usage_text=usage_text, log_uri=log_uri)
        else:
            self._post(
                phase=Phase.FAILED,
                text=f"failed: {status.error}",
                usage_text=usage_text,
                log_uri=log_uri,
                log_group=log_group,
            )

    def _destination(self, plan: Plan) -> str:
        """Where the frames will land (the panel's "what will come back")."""
        if self.options.output_root is not None:
            return f"{deliveries.output_folder(plan, self.options.output_root)}{os.sep}"
        return f"{self.options.output_dir / (plan.job_id or '<job id>')}{os.sep}"

    def _usage_text(self, connection: Connection, job: JobRef) -> str:
        try:
            return history.usage(connection, job).describe(with_cost=not self.settings.is_local)
        except RenderOnAwsError as error:
            return f"compute unknown: {error.message}"
