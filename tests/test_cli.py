"""The command line as a user meets it: named errors on the last line, status, cancel, download."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from localcloud.process import LocalCloudProcess
from tests.conftest import free_port, make_scene, run_cli


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "scene.blend", "--frames-per-job", "0"], "InvalidInput: "),
        (["submit", "scene.blend", "--frames-per-job", "abc"], "InvalidInput: "),
        (["submit", "scene.blend", "--frames", "a-b"], "InvalidInput: "),
        (["frobnicate"], "InvalidInput: "),
    ],
)
def test_bad_arguments_are_invalid_input(local_cloud: LocalCloudProcess, args: list[str], expected: str) -> None:
    result = run_cli(local_cloud, *args)
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(expected)


@pytest.mark.parametrize(
    "args",
    [
        ["--with-frames"],
        ["--with-frames", "--wait"],
        ["--download-to-output-path"],
    ],
)
def test_download_options_need_their_companions(
    local_cloud: LocalCloudProcess, tiny_scene: Path, args: list[str]
) -> None:
    """Refused before anything is uploaded, with the option it lacks named."""
    result = run_cli(local_cloud, "submit", str(tiny_scene), *args)
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("InvalidInput: --")
    assert "submitted job" not in result.stderr


def test_a_missing_file_is_named(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    result = run_cli(local_cloud, "submit", str(tmp_path / "nowhere.blend"))
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("InputNotFound: ")


def test_a_wrong_stack_is_named(local_cloud: LocalCloudProcess, tiny_scene: Path) -> None:
    result = run_cli(local_cloud, "--stack", "no-such-stack", "submit", str(tiny_scene))
    assert result.returncode == 1
    assert last_line(result.stderr) == "StackNotFound: no stack named 'no-such-stack' in us-east-1"


def test_an_unreachable_endpoint_is_named(tmp_path: Path, tiny_scene: Path, local_cloud: LocalCloudProcess) -> None:
    command = local_cloud.cli_command("submit", str(tiny_scene))
    command[command.index("--endpoint") + 1] = f"http://127.0.0.1:{free_port()}"
    import subprocess

    result = subprocess.run(command, capture_output=True, text=True, env=local_cloud.client_environment(), timeout=120)
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("ConnectionFailed: cannot reach http://127.0.0.1:")


def test_status_and_download_of_a_finished_job(
    local_cloud: LocalCloudProcess, tiny_scene: Path, tmp_path: Path
) -> None:
    submitted = run_cli(local_cloud, "submit", str(tiny_scene), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    status = run_cli(local_cloud, "status", job_id)
    assert (status.returncode, status.stdout.strip()) == (0, f"{job_id}: done")
    downloaded = run_cli(local_cloud, "download", job_id, str(tmp_path / "dl"), "--with-frames")
    assert downloaded.returncode == 0, downloaded.stderr
    paths = [Path(line) for line in downloaded.stdout.split()]
    assert paths[0].name == "tiny.mp4" and paths[0].stat().st_size > 0
    # Named as F12 names them: the scene's output path is Blender's default "/tmp/" (a folder: 4-digit frames),
    # inside a folder of the job's own.
    assert sorted(path.name for path in paths[1:]) == [f"{frame:04d}.png" for frame in range(1, 7)]
    assert {path.parent for path in paths[1:]} == {tmp_path / "dl" / job_id}


def worker_processes(cloud: LocalCloudProcess) -> list[psutil.Process]:
    """The worker processes the local cloud runs now (exited ones not yet reaped do not count)."""
    running = []
    for child in psutil.Process(cloud.process.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "render_worker.cli" in " ".join(child.cmdline()):
                running.append(child)
        except psutil.NoSuchProcess:
            continue
    return running


def test_cancel_stops_the_execution_and_every_batch_job(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "slow.blend", "--frame-end", "40", "--resolution", "160", "90", "--samples", "32")
    submitted = run_cli(local_cloud, "submit", str(scene))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    deadline = time.monotonic() + 120
    while not worker_processes(local_cloud) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_processes(local_cloud), "the render never started"

    cancelled = run_cli(local_cloud, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr

    status = run_cli(local_cloud, "status", job_id)
    assert status.returncode == 1 and last_line(status.stderr).startswith("JobCancelled: ")
    deadline = time.monotonic() + 60
    while worker_processes(local_cloud) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not worker_processes(local_cloud), "a worker kept running after cancel"
    batch = local_cloud.client("batch")
    queue = local_cloud.outputs["JobQueueArn"]

    def unfinished() -> list[dict]:
        """This job's Batch jobs not yet FAILED/SUCCEEDED (a killed worker's job is marked a moment after it exits)."""
        return [
            job
            for state in ("RUNNING", "RUNNABLE", "STARTING", "SUBMITTED", "PENDING")
            for job in batch.list_jobs(jobQueue=queue, jobStatus=state)["jobSummaryList"]
            if job_id in job["jobName"]
        ]

    deadline = time.monotonic() + 30
    while unfinished() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not unfinished(), "a Batch job of the cancelled execution is still running"
