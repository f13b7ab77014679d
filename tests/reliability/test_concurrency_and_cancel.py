"""Concurrency (issue 9 item 3) and cancel (item 5) drills on the drill cloud.

Five submissions of the same scene under the same job name at once must stay apart: distinct job ids, prefixes,
plans and videos (only the content-addressed upload is shared, by design). Cancelling must stop the execution,
the array job, every child, and every worker process. The add-on's cancel button calls the same
``starting.stop`` (its test belongs to the add-on engineer).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene, run_cli

from .support import (
    bucket_keys,
    execution_arn,
    foreign_keys,
    job_attempts,
    last_line,
    read_object,
    wait_execution,
    wait_for,
    workers,
)


@pytest.mark.slow
def test_five_identical_jobs_at_once_share_no_key(drill_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "same.blend", "--frame-end", "3", "--resolution", "64", "36", "--engine", "workbench")
    before = bucket_keys(drill_cloud)
    command = drill_cloud.cli_command("submit", str(scene), "--job-name", "Same Name", "--wait")
    processes = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=drill_cloud.client_environment()
        )
        for _ in range(5)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0] * 5, [err[-500:] for _, err in outputs]
    job_ids = [out.split()[0] for out, _ in outputs]
    assert len(set(job_ids)) == 5

    new = bucket_keys(drill_cloud) - before
    assert not foreign_keys(new, set(job_ids))
    per_job = {job_id: {key for key in new if key.startswith(f"jobs/{job_id}/")} for job_id in job_ids}
    for job_id, keys in per_job.items():
        assert {f"jobs/{job_id}/frames/{frame:06d}.png" for frame in (1, 2, 3)} <= keys
        assert f"jobs/{job_id}/Same_Name.mp4" in keys and f"jobs/{job_id}/job.json" in keys
        plan = json.loads(read_object(drill_cloud, f"jobs/{job_id}/job.json"))
        assert plan["job_id"] == job_id and plan["output_uri"].endswith(f"/jobs/{job_id}")
        manifest = json.loads(read_object(drill_cloud, f"jobs/{job_id}/manifest.json"))
        assert list(manifest["files"]) == ["same.blend"]
    # Each job rendered its own frames exactly once.
    for job_id in job_ids:
        rendered = [frame for attempt in job_attempts(drill_cloud, job_id) for frame in attempt.rendered]
        assert sorted(rendered) == [1, 2, 3], (job_id, rendered)
    uploads = {key for key in new if key.startswith("cas/")}
    assert len(uploads) <= 1, "the same file is stored once, whoever submits it"


@pytest.mark.slow
def test_cancel_stops_the_execution_every_batch_job_and_every_worker(
    drill_cloud: LocalCloudProcess, tmp_path: Path
) -> None:
    scene = make_scene(
        tmp_path / "long.blend",
        "--frame-end",
        "40",
        "--resolution",
        "96",
        "54",
        "--engine",
        "cycles",
        "--samples",
        "64",
    )
    submitted = run_cli(drill_cloud, "submit", str(scene), "--frames-per-job", "5")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    running = wait_for(lambda: len(workers(drill_cloud, job_id)) >= 4 and workers(drill_cloud, job_id), timeout=120)
    assert running, "the children never all started"
    pids = [worker.process.pid for worker in running]
    parent_id = running[0].batch_job.split(":")[0]

    cancelled = run_cli(drill_cloud, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert last_line(cancelled.stderr) == f"cancelled {job_id}"

    described = wait_execution(drill_cloud, execution_arn(drill_cloud, job_id))
    assert described["status"] == "ABORTED"  # (moto keeps no error/cause for a stopped execution; AWS does)
    status = run_cli(drill_cloud, "status", job_id)
    assert status.returncode == 1 and last_line(status.stderr).startswith("JobCancelled: ")

    assert wait_for(lambda: not workers(drill_cloud, job_id), timeout=60), "a worker kept running after cancel"
    import psutil

    def still_running() -> list[int]:
        running = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    running.append(pid)
            except psutil.NoSuchProcess:
                pass
        return running

    # The executor forgets a worker when it is told to stop; on a loaded machine the process needs a moment more.
    assert wait_for(lambda: not still_running(), timeout=30), f"workers {still_running()} outlived the cancel"

    batch = drill_cloud.client("batch")
    parent = wait_for(lambda: (d := batch.describe_jobs(jobs=[parent_id])["jobs"][0])["status"] == "FAILED" and d)
    assert parent, "the array job was not stopped"
    children = batch.describe_jobs(jobs=[f"{parent_id}:{index}" for index in range(8)])["jobs"]
    assert len(children) == 8
    assert {child["status"] for child in children} == {"FAILED"}
    assert {child["statusReason"] for child in children} == {"Execution was stopped"}
    # Never retried: a terminated job is not a Spot loss.
    assert all(len(child["attempts"]) <= 1 for child in children)
    # The running children were stopped gracefully (SIGTERM: finish the frame and its upload), not left behind.
    stopped = [attempt for attempt in job_attempts(drill_cloud, job_id) if "received SIGTERM" in attempt.text]
    assert len(stopped) >= 4
    # Nothing comes after: no stitch job, no video, and no frame appears once the workers are gone.
    keys = bucket_keys(drill_cloud)
    assert not [key for key in keys if key.startswith(f"jobs/{job_id}/") and key.endswith(".mp4")]
    assert not job_attempts(drill_cloud, job_id, action="stitch")
    frames_now = {key for key in keys if key.startswith(f"jobs/{job_id}/frames/")}
    assert {key for key in bucket_keys(drill_cloud) if key.startswith(f"jobs/{job_id}/frames/")} == frames_now
