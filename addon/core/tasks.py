"""Background work for the Blender add-on, without bpy: one thread per job, results handed over as snapshots.

Blender's main thread draws the UI; a network call there freezes it (Deadline Cloud's submitter does, for
minutes on a slow upload). So every call to AWS happens in a :class:`JobTask` thread, which publishes immutable
:class:`JobView` snapshots through a callback; the add-on queues them on a
:class:`~.mainthread.MainThreadQueue` and a ``bpy.app.timers`` function drains it. The main thread only ever
copies snapshots into the UI.

A job's polling keeps within :data:`~.budget.AWS_CALLS_PER_MINUTE` on AWS (a sliding :class:`~.budget.CallBudget`),
the flipbook's preview downloads included; on a local endpoint it polls as the command line does, without a
budget. Previews come coarse to fine (:func:`~.flipbook.fetch_order`), a few per poll: on AWS up to
:data:`AWS_PREVIEWS_PER_POLL`, which stretches a poll's cycle from 10 s to 20 s while previews wait (3 cycles of
4 calls a minute); when the job ends the rest are fetched at once, as the download is.
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
from .flipbook import fetch_order
from .following import JobStatus, JobWatcher, poll_interval
from .jobref import JobRef
from .preparing import SubmitRequest, prepare
from .previews import fetch_previews, preview_path
from .progress import EtaEstimator, describe, format_duration
from .starting import resume, stop, submit_prepared

log = logging.getLogger(__name__)
AWS_PREVIEW_SECONDS = 10.0
"""On AWS previews are fetched at most once a poll (they share the 12 calls a minute with polling)."""
AWS_PREVIEWS_PER_POLL = 2
LOCAL_PREVIEWS_PER_POLL = 16
FINAL_PREVIEW_BATCH = 16
"""When the job has ended, the previews not fetched yet come in batches of this many, each shown as it lands."""
FINAL_PREVIEWS_MAX = 2000
"""At most this many previews are fetched after the end (a longer shot's flipbook holds between them)."""
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
    blender: str = ""
    """The Blender version the job renders with (``"4.2.23"``, from the plan)."""
    runtime_notices: tuple[str, ...] = ()
    """``"Name: message"`` warnings about that Blender (another series than the file's, a version mismatch)."""
    unbaked: tuple[str, ...] = ()
    """Simulations that are not baked (``UnbakedSimulation``), found before the upload: a warning, not a stop."""
    deliveries: tuple[str, ...] = ()
    """What will come back (formats, names, where, video), from the plan: :func:`.deliveries.describe`."""
    frames_done: int = 0
    frames_total: int = 0
    last_frame: int | None = None
    preview_path: str = ""
    """The image to show when the flipbook is not playing: the latest preview fetched (or frame downloaded)."""
    preview_dir: str = ""
    preview_frames: tuple[int, ...] = ()
    """Frames whose preview is on disk (:func:`~.previews.preview_path` under :attr:`preview_dir`), sorted."""
    planned: range = range(0)
    """The shot's frames, which the flipbook plays."""
    fps: float = 0.0
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
    previews_per_poll: int = LOCAL_PREVIEWS_PER_POLL
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
        previews_per_poll=LOCAL_PREVIEWS_PER_POLL if local else AWS_PREVIEWS_PER_POLL,
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
        self.previews_fetched: set[int] = set()
        self._previews_unavailable: set[int] = set()
        self.view = JobView(
            key,
            job_name or (request.job_name if request and request.job_name else ""),
            execution_arn=execution_arn,
            job_id=ids.job_id_of(execution_arn) if execution_arn else "",
            preview_dir=str(options.preview_dir),
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
            if prepared.unbaked:
                self._post(unbaked=tuple(prepared.unbaked))
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
        per_poll = max(1, self.options.previews_per_poll)
        eta = EtaEstimator()
        stopped = False
        wanted: list[int] = []
        last_preview = -1e9
        while True:
            if wanted and time.monotonic() - last_preview >= self.options.preview_every:
                room = len(wanted) if budget is None else budget.room() - 2  # the next poll's calls come first
                batch = fetch_order(wanted, self.previews_fetched, min(per_poll, room))
                if batch:
                    self._fetch_previews(connection, job, batch, budget)
                    last_preview = time.monotonic()
            before = watcher.calls
            status = watcher.poll()
            if budget is not None:
                budget.spend(watcher.calls - before)
            wanted = sorted(status.present - self.previews_fetched - self._previews_unavailable)
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
                wait = max(wait, budget.delay(2 + min(len(wanted), per_poll)))
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
        if status.phase == Phase.RENDERING and total and status.waiting_for_capacity is None:
            text = f"rendering {status.frames_done}/{total} frames"
        self._post(
            phase=status.phase if status.phase != Phase.DONE else Phase.DOWNLOADING,
            text=text if status.phase != Phase.DONE else "downloading the video and frames",
            factor=factor,
            eta=eta if status.phase == Phase.RENDERING else None,
            frames_done=status.frames_done,
            frames_total=total,
            last_frame=status.last_frame,
            planned=status.planned if status.planned is not None else self.view.planned,
            fps=status.fps or self.view.fps,
            python_use=status.python_use,
            blender=status.blender,
            runtime_notices=status.runtime_notices,
            deliveries=tuple(deliveries.describe(status.plan, self._destination(status.plan)))
            if status.plan is not None
            else (),
            error=status.error or "",
            cause=status.cause or "",
            calls=self.watcher.calls if self.watcher else 0,
        )

    def _fetch_previews(
        self, connection: Connection, job: JobRef, frames: list[int], budget: CallBudget | None
    ) -> None:
        """Downloads previews for the flipbook; a failure only means that preview is asked for again later."""
        fetch = fetch_previews(connection.client("s3"), job, frames, self.options.preview_dir)
        self.preview_calls += fetch.calls
        if budget is not None:
            budget.spend(fetch.calls)
        self._previews_unavailable.update(fetch.unavailable)
        if fetch.fetched:
            self.previews_fetched.update(fetch.fetched)
            self._post(
                preview_frames=tuple(sorted(self.previews_fetched)),
                # the latest rendered frame that has a preview (fetching goes coarse to fine, not in frame order)
                preview_path=str(preview_path(self.options.preview_dir, job.job_id, max(self.previews_fetched))),
            )

    def _fetch_remaining_previews(self, connection: Connection, job: JobRef, status: JobStatus) -> None:
        """After the end (polling is over, so no budget): the previews polling had no room for, coarse to fine."""
        left = status.present - self.previews_fetched - self._previews_unavailable
        order = fetch_order(left, self.previews_fetched, FINAL_PREVIEWS_MAX)
        for start in range(0, len(order), FINAL_PREVIEW_BATCH):
            if self.shutdown.is_set():
                return
            self._fetch_previews(connection, job, order[start : start + FINAL_PREVIEW_BATCH], None)

    def _finish(self, connection: Connection, job: JobRef, status: JobStatus) -> None:
        log_uri = f"s3://{job.bucket}/{errors_prefix(job.job_id)}"
        log_group = "" if self.settings.is_local else connection.outputs.values.get("LogGroupName", "")
        usage_text = self._usage_text(connection, job)
        self._fetch_remaining_previews(connection, job, status)
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
            if result.frames and not self.previews_fetched:  # a job from before previews: its last frame
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
