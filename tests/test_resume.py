"""Resume (issue 17.3): a cancelled job runs again as ``<jobId>--r2`` and renders only the frames it lacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from render_contract import ids, layout

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene, run_cli
from tests.reliability.support import decode_video, job_attempts, last_line, render_counts, wait_for, workers

pytestmark = pytest.mark.slow


def frames_in_s3(cloud: LocalCloudProcess, job_id: str) -> set[int]:
    listing = cloud.client("s3").list_objects_v2(Bucket=cloud.bucket, Prefix=layout.frames_prefix(job_id))
    return {n for item in listing.get("Contents", []) if (n := layout.frame_from_key(item["Key"])) is not None}


def test_cancel_then_resume_renders_only_the_missing_frames(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "resume.blend", "--frame-end", "24", "--resolution", "160", "90", "--samples", "32")
    submitted = run_cli(local_cloud, "submit", str(scene), "--frames-per-job", "6")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    assert wait_for(lambda: len(frames_in_s3(local_cloud, job_id)) >= 3, timeout=300), "no frame was rendered"

    cancelled = run_cli(local_cloud, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    status = run_cli(local_cloud, "status", job_id)
    assert status.returncode == 1 and last_line(status.stderr).startswith("JobCancelled: ")
    # The cancelled workers upload the frame in flight, then exit.
    assert wait_for(lambda: not workers(local_cloud, job_id), timeout=60), "a worker kept running after cancel"
    done_before = frames_in_s3(local_cloud, job_id)
    assert 3 <= len(done_before) < 24
    uploads_before = {item["Key"] for item in _all_objects(local_cloud, "cas/")}

    resumed = run_cli(local_cloud, "resume", job_id, "--wait", "--download", str(tmp_path / "out"))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split()[0] == job_id and "(run 2)" in resumed.stderr
    video = Path(resumed.stdout.split()[-1])
    assert len(decode_video(video)) == 24

    # Every frame rendered once over both runs: none rendered again, none overwritten.
    counts = render_counts(job_attempts(local_cloud, job_id))
    assert sorted(counts) == list(range(1, 25)) and set(counts.values()) == {1}, counts
    assert {item["Key"] for item in _all_objects(local_cloud, "cas/")} == uploads_before  # nothing uploaded again
    # Previews (issue 17.2): one per frame over both runs, beside the frames and never counted or downloaded as one.
    previews = _all_objects(local_cloud, layout.previews_prefix(job_id))
    assert sorted(layout.frame_from_key(item["Key"]) for item in previews) == list(range(1, 25))
    assert len(frames_in_s3(local_cloud, job_id)) == 24 and not list((tmp_path / "out").rglob("*.jpg"))
    sfn = local_cloud.client("stepfunctions")
    machine = local_cloud.outputs["StateMachineArn"]
    runs = [sfn.describe_execution(executionArn=ids.execution_arn(machine, job_id, run))["status"] for run in (1, 2)]
    assert runs == ["ABORTED", "SUCCEEDED"]
    # The job reads as one: its status is the latest run's.
    status = run_cli(local_cloud, "status", job_id)
    assert status.returncode == 0 and status.stdout.startswith(f"{job_id}: done"), status.stdout + status.stderr

    again = run_cli(local_cloud, "resume", job_id)
    assert again.returncode == 1 and last_line(again.stderr).startswith("InvalidInput: ") and "done" in again.stderr


def _all_objects(cloud: LocalCloudProcess, prefix: str) -> list[dict]:
    paginator = cloud.client("s3").get_paginator("list_objects_v2")
    return [
        item for page in paginator.paginate(Bucket=cloud.bucket, Prefix=prefix) for item in page.get("Contents", [])
    ]


def test_a_job_that_never_started_cannot_be_resumed(local_cloud: LocalCloudProcess) -> None:
    result = run_cli(local_cloud, "resume", "nobody-20261204-000000-abcdef")
    assert result.returncode == 1 and last_line(result.stderr).startswith("InvalidInput: ")
