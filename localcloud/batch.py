"""The local Batch executor: runs each job (and each array child) as a process of the real worker.

moto's simple Batch marks jobs SUCCEEDED without running anything and never retries. Here every job runs the
worker entry point with the job definition's command (``Ref::`` parameters filled in) and the standard Batch
environment (``AWS_BATCH_JOB_ID``, ``AWS_BATCH_JOB_ARRAY_INDEX``, ``AWS_BATCH_JOB_ATTEMPT``), array children
in parallel up to the worker count, and the job definition's ``retryStrategy`` decides what is retried.

A process killed by a signal stands in for a lost host (a Spot reclaim): its attempt ends with the status
reason AWS gives, ``Host EC2 (instance i-...) terminated.``, so ``evaluateOnExit`` treats it as on AWS.

Capacity: a queue without capacity (``--capacity none``, or ``on-demand``: only queues with an On-Demand compute
environment have any) starts none of its jobs, as when no compute environment can get an instance; they stay
RUNNABLE with the status reason Batch gives a blocked job (``CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - ...``), and
the queue's ``jobStateTimeLimitActions`` for that reason cancel them after their ``maxTimeSeconds``, as Batch
does: the job fails with the action's reason.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from render_contract.errors import BATCH_CAPACITY_REASON

LOG = logging.getLogger("localcloud.batch")
HOST_LOST_REASON = "Host EC2 (instance i-0localcloud00000) terminated."
CONTAINER_EXITED_REASON = "Essential container in task exited"
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
TERMINATE_GRACE_SECONDS = 10.0
WORKER_ENTRYPOINT = [sys.executable, "-m", "render_worker.cli"]
CAPACITY_REASON = BATCH_CAPACITY_REASON
"""The one blocking reason the local cloud can have: no capacity."""
BLOCKED_REASON = f"{CAPACITY_REASON} - the local cloud has no capacity for this queue (its --capacity)"


def decide(strategy: Mapping[str, Any] | None, attempt: int, exit_code: int | None, status_reason: str) -> str:
    """``RETRY`` or ``EXIT`` for a failed attempt, as AWS Batch evaluates a ``retryStrategy``.

    Attempts are counted from 1; once they are used up the job fails. Otherwise the first ``evaluateOnExit``
    entry whose every given pattern matches decides (patterns are globs); when none matches, AWS retries.
    """
    strategy = strategy or {}
    if attempt >= int(strategy.get("attempts", 1) or 1):
        return "EXIT"
    code = "" if exit_code is None else str(exit_code)
    for rule in strategy.get("evaluateOnExit", []) or []:
        checks = [
            ("onExitCode", code),
            ("onStatusReason", status_reason),
            ("onReason", CONTAINER_EXITED_REASON if exit_code is not None else status_reason),
        ]
        given = [(rule[key], value) for key, value in checks if rule.get(key)]
        if given and all(fnmatch.fnmatchcase(value, pattern) for pattern, value in given):
            return str(rule.get("action", "RETRY")).upper()
    return "RETRY"


def slot_cpus(workers: int) -> list[set[int]] | None:
    """The cores of each slot, as a container's own cores: slot i gets its share of this machine's cores.

    Blender's thread pool (TBB) sizes itself to the CPUs a process may use. Without its own cores, a worker
    rendering with fewer threads than the machine has keeps an idle pool thread spinning (sched_yield), which
    took half of each core from two 1-thread renders here. Returns None when the cores don't divide evenly.
    """
    cores = sorted(os.sched_getaffinity(0))
    share = len(cores) // workers
    if share < 1:
        return None
    return [set(cores[i * share : (i + 1) * share]) for i in range(workers)]


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class LocalBatchExecutor:
    """A fixed pool of slots that run queued jobs as worker processes."""

    def __init__(self, workers: int, environment: Mapping[str, str], log_dir: Path) -> None:
        self.workers = workers
        self._no_capacity: set[str] = set()
        """Queues none of whose jobs can start (no instance can be had); their RUNNABLE jobs meet the time limits."""
        self._held: list[Any] = []
        self._time_limits: dict[str, list[dict[str, Any]]] = {}
        self._runnable_since: dict[str, tuple[Any, float]] = {}
        self.environment = dict(environment)
        self.log_dir = log_dir
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._terminated: dict[str, str] = {}
        self._attempt_counts: dict[str, int] = {}
        self._parents: dict[str, Any] = {}
        self._stopping = threading.Event()
        self._cpus = slot_cpus(workers)
        self._threads = [
            threading.Thread(target=self._run_slot, args=(i,), name=f"localbatch-{i}", daemon=True)
            for i in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._enforce_time_limits, name="localbatch-limits", daemon=True))
        for thread in self._threads:
            thread.start()

    def set_capacity(self, queue_arn: str, available: bool) -> None:
        """Whether the queue's jobs can get an instance (all can, unless said otherwise)."""
        if available:
            self._no_capacity.discard(queue_arn)
        else:
            self._no_capacity.add(queue_arn)

    def _has_capacity(self, job: Any) -> bool:
        return job.job_queue.arn not in self._no_capacity

    def set_time_limits(self, queue_arn: str, actions: list[dict[str, Any]]) -> None:
        """A job queue's ``jobStateTimeLimitActions`` (as CreateJobQueue takes them, any key casing)."""
        self._time_limits[queue_arn] = [{key[0].lower() + key[1:]: value for key, value in a.items()} for a in actions]

    # ---- called by the patched moto backend -------------------------------------------------------------
    def submit(self, job: Any, children: list[Any] | None = None) -> None:
        if children:
            job.status = "PENDING"
            for child in children:
                self._parents[child.job_id] = job
                self._enqueue(child)
        else:
            self._enqueue(job)

    def terminate(self, job: Any, reason: str) -> None:
        """TerminateJob: stop the job (every child of an array) now; a terminated job is never retried."""
        targets = list(job._child_jobs or []) if job._child_jobs else [job]
        for target in targets:
            with self._lock:
                if target.job_stopped:
                    continue
                self._terminated[target.job_id] = reason
                process = self._processes.get(target.job_id)
            if process is None:
                self._finish(target, success=False, reason=reason)
            else:
                threading.Thread(target=self._stop_process, args=(process,), daemon=True).start()
        if job._child_jobs:
            self._update_parent(job, reason=reason)

    def running_processes(self) -> dict[str, int]:
        with self._lock:
            return {job_id: process.pid for job_id, process in self._processes.items()}

    def shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            self._stop_process(process, grace=2.0)

    # ---- slots ----------------------------------------------------------------------------------------
    def _enqueue(self, job: Any) -> None:
        job.status = "RUNNABLE"
        with self._lock:
            self._runnable_since[job.job_id] = (job, time.monotonic())
        if not self._has_capacity(job):
            job.job_stopped_reason = BLOCKED_REASON  # moto shows it as the job's statusReason
        self._queue.put(job)

    def _enforce_time_limits(self) -> None:
        """Cancels jobs RUNNABLE for longer than their queue allows for the reason they wait, as Batch does."""
        while not self._stopping.wait(0.25):
            now = time.monotonic()
            with self._lock:
                waiting = list(self._runnable_since.values())
            for job, since in waiting:
                if self._has_capacity(job):
                    continue  # it waits only for a busy slot: no blocking reason, no action (as on AWS)
                for action in self._time_limits.get(job.job_queue.arn, []):
                    applies = action.get("state") == "RUNNABLE" and action.get("reason") == CAPACITY_REASON
                    if applies and action.get("action") == "CANCEL" and now - since >= float(action["maxTimeSeconds"]):
                        LOG.info("job %s RUNNABLE for %.0f s without capacity: cancelled", job.job_id, now - since)
                        with self._lock:
                            self._runnable_since.pop(job.job_id, None)
                        self.terminate(job, reason=str(action["reason"]))
                        break

    def _run_slot(self, slot: int) -> None:
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if not self._has_capacity(job):
                self._held.append(job)  # stays RUNNABLE: no instance for it (its time limit may cancel it)
                continue
            with self._lock:
                self._runnable_since.pop(job.job_id, None)
            if job.job_stopped or job.job_id in self._terminated:
                continue
            try:
                self._run_attempt(job, self._cpus[slot] if self._cpus else None)
            except Exception:  # a bug here must not kill the slot: fail the job visibly instead
                LOG.exception("local batch executor failed on job %s", job.job_id)
                self._finish(job, success=False, reason="local executor error (see the local cloud's log)")

    def _run_attempt(self, job: Any, cpus: set[int] | None = None) -> None:
        attempt = self._attempt_counts.get(job.job_id, 0) + 1
        self._attempt_counts[job.job_id] = attempt
        command, environment = self._command_and_environment(job, attempt)
        log_path = self.log_dir / job.job_id.replace(":", "_") / f"attempt-{attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = datetime.now()
        if attempt == 1:
            job.job_started_at = started
        record: dict[str, Any] = {"container": {"logStreamName": str(log_path)}, "startedAt": _millis(started)}
        with self._lock:
            if job.job_id in self._terminated:
                return
            with open(log_path, "wb") as log_file:
                process = subprocess.Popen(
                    command,
                    env=environment,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
                )
            self._processes[job.job_id] = process
        job.status = "RUNNING"
        parent = self._parents.get(job.job_id)
        if parent is not None and parent.status in ("PENDING", "RUNNABLE"):
            parent.job_started_at = parent.job_started_at if parent.attempts else started
            parent.status = "RUNNING"
        timeout = self._attempt_timeout(job)
        try:
            returncode = process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            self._stop_process(process)
            returncode = process.wait()
            timed_out = True
        with self._lock:
            self._processes.pop(job.job_id, None)
            terminated_reason = self._terminated.get(job.job_id)
        stopped = datetime.now()
        exit_code: int | None = returncode if returncode >= 0 else None
        if terminated_reason is not None:
            status_reason = terminated_reason
        elif timed_out:
            status_reason = TIMEOUT_REASON
        elif returncode < 0:
            status_reason = HOST_LOST_REASON
        else:
            status_reason = CONTAINER_EXITED_REASON
        record["container"].update({"exitCode": exit_code, "reason": status_reason})
        record.update({"stoppedAt": _millis(stopped), "statusReason": status_reason})
        job.attempts.append(record)
        LOG.info("job %s attempt %d ended: exit %s, %s", job.job_id, attempt, returncode, status_reason)
        if returncode == 0 and terminated_reason is None:
            self._finish(job, success=True, reason=status_reason, exit_code=exit_code)
            return
        if terminated_reason is None and not timed_out and not self._stopping.is_set():
            action = decide(job.job_definition.retry_strategy, attempt, exit_code, status_reason)
            if action == "RETRY":
                self._enqueue(job)
                return
        self._finish(job, success=False, reason=status_reason, exit_code=exit_code)

    def _finish(self, job: Any, success: bool, reason: str, exit_code: int | None = None) -> None:
        job.exit_code = exit_code
        job.job_stopped_reason = reason
        job._mark_stopped(success=success)
        parent = self._parents.get(job.job_id)
        if parent is not None:
            self._update_parent(parent)

    def _update_parent(self, parent: Any, reason: str | None = None) -> None:
        children = parent._child_jobs or []
        with self._lock:
            if parent.job_stopped or not all(child.job_stopped for child in children):
                return
            failed = [child for child in children if child.status != "SUCCEEDED"]
            parent.job_stopped_reason = reason or (
                f"{len(failed)} of {len(children)} child jobs failed" if failed else None
            )
            parent._mark_stopped(success=not failed)

    # ---- processes ------------------------------------------------------------------------------------
    def _command_and_environment(self, job: Any, attempt: int) -> tuple[list[str], dict[str, str]]:
        properties = job.job_definition.container_properties or {}
        overrides = job.container_overrides or {}
        command = job._add_parameters_to_command(overrides.get("command") or properties.get("command") or [])
        environment = dict(self.environment)
        for source in (properties.get("environment") or [], overrides.get("environment") or []):
            environment.update({item["name"]: str(item["value"]) for item in source})
        environment["AWS_BATCH_JOB_ID"] = job.job_id
        environment["AWS_BATCH_JOB_ATTEMPT"] = str(attempt)
        environment["AWS_BATCH_JQ_NAME"] = job.job_queue.name
        index = (job.array_properties or {}).get("index")
        if index is not None:
            environment["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
        return [*WORKER_ENTRYPOINT, *command], environment

    @staticmethod
    def _attempt_timeout(job: Any) -> float | None:
        timeout = job.timeout or job.job_definition.timeout or {}
        seconds = timeout.get("attemptDurationSeconds")
        return float(seconds) if seconds else None

    @staticmethod
    def _stop_process(process: subprocess.Popen[bytes], grace: float = TERMINATE_GRACE_SECONDS) -> None:
        """SIGTERM the process group (the worker finishes its frame upload), SIGKILL after the grace time."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
