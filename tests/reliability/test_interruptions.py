"""Interruption drills (issue 9 item 1, issue 5 item 8): Spot reclaims and stop notices cost only the frames in
flight, and a deterministic failure is not retried.

A render child is SIGKILLed in the middle of a frame (the local cloud's stand-in for a lost Spot host: the attempt
ends with ``Host EC2 (instance ...) terminated.`` and Batch retries it) or sent SIGTERM (a Spot interruption notice:
the worker finishes the frame in flight and its upload, then exits 75, which the retry strategy retries). The job
must still end with a video holding every planned frame once and in order, proven by matching each decoded video
frame to the nearest rendered PNG in S3, and the worker logs must show that only frames in flight were rendered
again.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene, run_cli

from .conftest import DRILL_WORKERS
from .support import (
    RENDERED,
    Worker,
    bpy_edit,
    execution_arn,
    job_attempts,
    job_frames,
    last_line,
    match_video_to_frames,
    read_object,
    render_counts,
    wait_execution,
    wait_for,
    workers,
)

FRAMES = 12
FRAMES_PER_JOB = 3
"""4 chunks of 3 frames: one per drill-cloud worker, so every child runs at once and can be caught mid-frame."""

FIGURES: dict[str, dict[str, int]] = {}
"""What each drill measured (printed for docs/RELIABILITY.md)."""


@pytest.fixture(scope="module")
def slow_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cycles at 96x54 with enough samples that a frame takes about a second on a shared core: slow enough to be
    caught in the middle, small enough to keep the drill short."""
    path = tmp_path_factory.mktemp("drill") / "drill.blend"
    return make_scene(
        path, "--frame-end", str(FRAMES), "--resolution", "96", "54", "--engine", "cycles", "--samples", "160"
    )


def _interrupt(cloud: LocalCloudProcess, job_id: str, kills: int, terms: int) -> tuple[dict[str, int], dict[str, int]]:
    """SIGKILLs ``kills`` children and SIGTERMs ``terms`` others, each right after its first frame reached S3 (so
    the next frame is being rendered). Returns {batch job id: frames it had uploaded} for each kind."""
    killed: dict[str, int] = {}
    stopped: dict[str, int] = {}

    def step() -> bool:
        for worker in workers(cloud, job_id):
            if worker.attempt != 1 or worker.batch_job in killed or worker.batch_job in stopped:
                continue
            log = cloud.state_dir / "batch" / worker.log / "attempt-1.log"
            done = len(RENDERED.findall(log.read_text(errors="replace"))) if log.exists() else 0
            if not 1 <= done < FRAMES_PER_JOB:
                continue
            target = killed if len(killed) < kills else stopped if len(stopped) < terms else None
            if target is None:
                break
            _signal(worker, signal.SIGKILL if target is killed else signal.SIGTERM)
            target[worker.batch_job] = done
        return len(killed) == kills and len(stopped) == terms

    assert wait_for(step, timeout=240, interval=0.05), f"could not interrupt in time: {killed=} {stopped=}"
    return killed, stopped


def _signal(worker: Worker, sig: signal.Signals) -> None:
    worker.process.send_signal(sig)


def _run_drill(cloud: LocalCloudProcess, scene: Path, tmp_path: Path, kills: int, terms: int) -> None:
    submitted = run_cli(
        cloud, "submit", str(scene), "--frames-per-job", str(FRAMES_PER_JOB), "--job-name", f"drill-{kills}"
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    killed, stopped = _interrupt(cloud, job_id, kills, terms)

    described = wait_execution(cloud, execution_arn(cloud, job_id), timeout=600)
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["chunkCount"] == FRAMES // FRAMES_PER_JOB

    # The retry strategy saw what AWS would report: a lost host for SIGKILL, exit 75 for SIGTERM.
    batch = cloud.client("batch")
    for job in batch.describe_jobs(jobs=[*killed, *stopped])["jobs"]:
        first = job["attempts"][0]
        assert job["status"] == "SUCCEEDED" and len(job["attempts"]) >= 2, job
        if job["jobId"] in killed:
            assert first["statusReason"].startswith("Host EC2 (instance ") and first["statusReason"].endswith(
                "terminated."
            )
        else:
            assert first["container"]["exitCode"] == 75, first

    # Only the frames in flight were rendered again.
    attempts = job_attempts(cloud, job_id)
    counts = render_counts(attempts)
    frames = list(range(1, FRAMES + 1))
    assert sorted(counts) == frames, counts
    assert sum(counts.values()) <= FRAMES + kills, counts
    for attempt in attempts:
        earlier = [a for a in attempts if a.batch_job == attempt.batch_job and a.number < attempt.number]
        planned = attempt.planned
        assert planned is not None, attempt.text
        _, size, todo = planned
        done_before = sum(len(a.rendered) for a in earlier)
        assert todo <= size - done_before, (attempt.batch_job, attempt.number, todo, done_before)
        if attempt.number == 1 and attempt.batch_job.replace("_", ":") in killed:
            assert "timing:" not in attempt.text, "the killed child had already finished its chunk"
    for job, uploaded in stopped.items():
        first = next(a for a in attempts if a.batch_job == job.replace(":", "_") and a.number == 1)
        assert "received SIGTERM" in first.text
        assert len(first.rendered) >= uploaded, "a SIGTERMed worker must upload what it had rendered"

    # The video has every frame once and in order.
    video_path = tmp_path / "drill.mp4"
    video_path.write_bytes(read_object(cloud, output["videoUri"].split("/", 3)[3]))
    from .support import decode_video

    video = decode_video(video_path)
    rendered = job_frames(cloud, job_id, tmp_path)
    assert sorted(rendered) == frames
    matches = match_video_to_frames(video, [rendered[frame] for frame in frames])
    assert [index for index, _ in matches] == list(range(FRAMES)), matches
    assert max(distance for _, distance in matches) < 10, matches

    FIGURES[f"kill {kills}, term {terms} of {DRILL_WORKERS}"] = {
        "frames": FRAMES,
        "renders": sum(counts.values()),
        "rerendered": sum(counts.values()) - FRAMES,
        "attempts": len(attempts),
    }
    print(f"\ndrill kill={kills} term={terms}: {FIGURES}")


@pytest.mark.slow
def test_one_spot_loss_and_one_stop_notice(drill_cloud: LocalCloudProcess, slow_scene: Path, tmp_path: Path) -> None:
    _run_drill(drill_cloud, slow_scene, tmp_path, kills=1, terms=1)


@pytest.mark.slow
def test_half_the_children_lost_and_one_stop_notice(
    drill_cloud: LocalCloudProcess, slow_scene: Path, tmp_path: Path
) -> None:
    _run_drill(drill_cloud, slow_scene, tmp_path, kills=DRILL_WORKERS // 2, terms=1)


@pytest.mark.slow
def test_a_deterministic_render_failure_is_not_retried(drill_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    """A render border of zero width: Blender refuses every frame ("Image too small"), which the frame counter
    cannot see. (Disabling every view layer, the first idea, still renders a black frame in bpy 5.0.1.)"""
    scene = make_scene(
        tmp_path / "border.blend", "--frame-end", "4", "--resolution", "64", "36", "--engine", "workbench"
    )
    bpy_edit(
        scene,
        "scene.render.use_border = True\nscene.render.border_min_x = 0.5\nscene.render.border_max_x = 0.5",
    )
    result = run_cli(drill_cloud, "submit", str(scene), "--frames-per-job", "2", "--wait")
    assert result.returncode == 1, result.stderr
    job_id = result.stdout.split()[0]
    # Every frame fails alone (issue 17.4: a failing frame does not stop its chunk's others), so the job names them all.
    line = last_line(result.stderr)
    assert line == "FramesFailed: 4 frame(s) failed: 1-4. RenderFailed on 1-4: Error: Image too small", line

    described = wait_execution(drill_cloud, execution_arn(drill_cloud, job_id))
    assert (described["status"], described["error"]) == ("FAILED", "FramesFailed")
    assert "Image too small" in described["cause"]  # the worker's own account, through the explain step
    attempts = job_attempts(drill_cloud, job_id)
    assert sorted((a.batch_job.rsplit("_", 1)[-1], a.number) for a in attempts) == [("0", 1), ("1", 1)]
    for attempt in attempts:
        assert "RenderFailed: Error: Image too small" in attempt.text and not attempt.rendered
    errors = sorted(
        key
        for key in drill_cloud.client("s3").list_objects_v2(Bucket=drill_cloud.bucket, Prefix=f"jobs/{job_id}/errors/")[
            "Contents"
        ]
        for key in [key["Key"]]
    )
    records = [json.loads(read_object(drill_cloud, key)) for key in errors]
    assert sorted((r["chunk"], r["error"], r["attempt"]) for r in records) == [
        (0, "FramesFailed", 1),
        (1, "FramesFailed", 1),
    ]
    assert not [k for k in errors if "stitch" in k], "stitch must not run after a failed render"
