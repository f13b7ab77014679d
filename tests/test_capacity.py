"""Waiting for capacity (issue 18.3), end to end on the local cloud: a job that cannot get an instance is shown as
``waiting for capacity`` while it waits, and after the stack's CapacityWaitSeconds the queue's
jobStateTimeLimitActions cancel it and the execution ends with the named error ``NoCapacity``.

The local cloud runs with ``--capacity none`` (no Batch job starts, as when no Spot or GPU instance can be had; a
RUNNABLE job carries Batch's ``CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY`` reason) and a short CapacityWaitSeconds;
the queue, its time-limit actions and the state machine are the template's and the ASL's, as on AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from render_contract.errors import BATCH_CAPACITY_REASON
from render_on_aws.core import following, history
from render_on_aws.core.connection import Connection, ConnectionSettings
from render_on_aws.core.following import CAPACITY_NOTICE_SECONDS, NO_CAPACITY_REASON, JobWatcher, capacity_wait
from render_on_aws.core.jobref import JobRef
from render_on_aws.core.progress import describe

from localcloud.process import LocalCloudProcess
from localcloud.process import start as start_local_cloud
from tests.conftest import run_cli
from tests.reliability.support import last_line

WAIT_SECONDS = 20
"""The local stack's CapacityWaitSeconds: long enough for a few polls to see the wait, short for a test."""


@pytest.fixture(scope="module")
def starved_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloudProcess]:
    cloud = start_local_cloud(
        tmp_path_factory.mktemp("starved"),
        workers=1,
        extra_args=("--capacity", "none", "--capacity-wait-seconds", str(WAIT_SECONDS)),
    )
    yield cloud
    cloud.stop()


def test_a_single_chunk_job_waits_visibly_then_ends_with_no_capacity(
    starved_cloud: LocalCloudProcess, tiny_scene: Path
) -> None:
    result = run_cli(starved_cloud, "submit", str(tiny_scene), "--frames-per-job", "6", "--wait", timeout=300)
    assert result.returncode == 1, result.stderr
    assert last_line(result.stderr).startswith("NoCapacity: no instance could be had for the render job"), result.stderr
    assert f"waiting for capacity (0 min): {BATCH_CAPACITY_REASON}" in result.stderr
    job_id = result.stdout.split()[0]
    status = run_cli(starved_cloud, "status", job_id)
    assert status.stdout.startswith(f"{job_id}: failed: NoCapacity: "), status.stdout + status.stderr


def test_an_array_job_is_followed_within_the_call_budget_and_ends_with_no_capacity(
    starved_cloud: LocalCloudProcess, tiny_scene: Path
) -> None:
    submitted = run_cli(starved_cloud, "submit", str(tiny_scene), "--frames-per-job", "2")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    connection = Connection(ConnectionSettings(stack=starved_cloud.stack, endpoint=starved_cloud.endpoint))
    watcher = JobWatcher(connection, JobRef.from_id(connection, job_id))
    seen: list[str] = []
    calls_per_poll: list[int] = []
    while True:
        before = watcher.calls
        status = watcher.poll()
        calls_per_poll.append(watcher.calls - before)
        seen.append(describe(status))
        if status.finished:
            break
        # No sleep needed for correctness: the queue's limit ends the job; a short pause spares the CPU.
        following.time.sleep(0.3)
    assert status.error == "NoCapacity", (status.error, status.cause)
    assert "array" not in (status.cause or "")
    waiting = [line for line in seen if line.startswith("waiting for capacity")]
    assert waiting and waiting[0] == f"waiting for capacity (0 min): {BATCH_CAPACITY_REASON} - " + (
        "the local cloud has no capacity for this queue (its --capacity)"
    )
    # Every poll stays within DescribeExecution + one more call (the frame listing, or the capacity check
    # in its place), apart from the one that reads the plan: 12 calls a minute at the AWS interval.
    assert sorted(calls_per_poll)[-2] <= 2 and max(calls_per_poll) <= 3, calls_per_poll


@pytest.fixture(scope="module")
def spot_starved_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloudProcess]:
    """No Spot capacity, On-Demand capacity, and the admin chose CapacityFallback on-demand."""
    cloud = start_local_cloud(
        tmp_path_factory.mktemp("spot-starved"),
        workers=1,
        extra_args=(
            "--capacity",
            "on-demand",
            "--capacity-wait-seconds",
            str(WAIT_SECONDS),
            "--parameter",
            "CapacityFallback=on-demand",
        ),
    )
    yield cloud
    cloud.stop()


def test_the_admins_on_demand_fallback_renders_after_the_wait(
    spot_starved_cloud: LocalCloudProcess, tiny_scene: Path, tmp_path: Path
) -> None:
    result = run_cli(
        spot_starved_cloud, "submit", str(tiny_scene), "--frames-per-job", "3", "--wait", "--download", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert f"waiting for capacity (0 min): {BATCH_CAPACITY_REASON}" in result.stderr
    assert Path(result.stdout.strip().splitlines()[-1]).stat().st_size > 0  # the video
    connection = Connection(ConnectionSettings(stack=spot_starved_cloud.stack, endpoint=spot_starved_cloud.endpoint))
    job = JobRef.from_id(connection, result.stdout.split()[0])
    batch = connection.client("batch")
    queues = [batch.describe_jobs(jobs=[i])["jobs"][0]["jobQueue"] for i in history.batch_job_ids(connection, job)]
    # Spot render (cancelled), then render and stitch on the On-Demand queue.
    assert len(queues) == 3 and queues[0] != queues[1] == queues[2], queues


# ---- what counts as waiting, from DescribeJobs answers ----------------------------------------------------------
NOW = 1_000_000.0


def job(status: str, age: float, reason: str | None = None, **extra: Any) -> dict[str, Any]:
    described: dict[str, Any] = {"jobId": "j", "status": status, "createdAt": int((NOW - age) * 1000), **extra}
    if reason:
        described["statusReason"] = reason
    return described


def test_capacity_wait_from_batch_answers() -> None:
    blocked = f"{BATCH_CAPACITY_REASON} - Service cannot fulfill the capacity requested for instance type [c7i.xlarge]"
    # Batch's own reason: at once.
    assert capacity_wait(job("RUNNABLE", 5, blocked), None, NOW) == following.CapacityWait(5.0, blocked)
    # No reason: only after a few minutes.
    assert capacity_wait(job("RUNNABLE", CAPACITY_NOTICE_SECONDS - 1), None, NOW) is None
    late = capacity_wait(job("RUNNABLE", CAPACITY_NOTICE_SECONDS + 60), None, NOW)
    assert late is not None and late.reason == NO_CAPACITY_REASON
    assert late.describe().startswith("waiting for capacity (4 min): no instance has started it yet")
    # Running, or not yet runnable: not waiting.
    assert capacity_wait(job("RUNNING", 900), None, NOW) is None
    assert capacity_wait(job("SUBMITTED", 900), None, NOW) is None
    # A retried job waits since its last attempt ended, not since it was created.
    retried = job("RUNNABLE", 3600, attempts=[{"stoppedAt": int((NOW - 30) * 1000)}])
    assert capacity_wait(retried, None, NOW) is None
    # An array: waiting only while none of its children runs; the first child's reason and age speak for it.
    parent = job("PENDING", 900, arrayProperties={"statusSummary": {"RUNNABLE": 3, "RUNNING": 1}})
    assert capacity_wait(parent, job("RUNNABLE", 900, blocked), NOW) is None
    parent["arrayProperties"]["statusSummary"] = {"RUNNABLE": 3, "SUCCEEDED": 1}
    assert capacity_wait(parent, job("RUNNABLE", 10, blocked), NOW) == following.CapacityWait(10.0, blocked)
