"""Partial failure (issue 17.4) and previews (issue 17.2), at the worker: a process with the job definition's
command line, real bpy, real S3 over HTTP (moto server).

The frame that fails on purpose is real Blender behaviour, not a switch in the worker: stereo (multi-view) is
keyframed on for that one frame, so Blender writes ``000003_L.png`` and ``000003_R.png`` instead of the frame's
image and the worker finds no image for it. (A render border is not animatable in bpy 5.0.1, and a camera marker
switching to an odd camera renders fine.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import boto3
import numpy as np
import pytest
from render_contract import errors, exitcodes, layout
from render_contract.failures import FrameFailure

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene, run_cli
from tests.reliability.support import bpy_edit, decode_image, job_attempts, last_line
from tests.test_frame_counter import app, env  # noqa: F401  (fixtures: the Lambda as its runtime loads it)
from tests.test_worker import error_record, frames_in_s3, make_plan, rendered, run_worker, upload_blend

JPEG_SIGNATURE = b"\xff\xd8\xff"


def failing_frame_scene(path: Path, frame: int, frames: int = 6) -> Path:
    """A tiny Workbench scene whose frame ``frame`` fails to render (stereo keyframed on for it alone)."""
    make_scene(path, "--frame-end", str(frames), "--resolution", "64", "36", "--engine", "workbench")
    return bpy_edit(
        path,
        "r = scene.render\n"
        "r.views_format = 'MULTIVIEW'\n"
        f"for value, at in ((False, 1), (True, {frame}), (False, {frame + 1})):\n"
        "    r.use_multiview = value\n"
        "    r.keyframe_insert('use_multiview', frame=at)\n",
    )


def failure_records(bucket: str, job_id: str) -> dict[int, FrameFailure]:
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=layout.failed_prefix(job_id)).get("Contents", [])
    records = [FrameFailure.from_json(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listing]
    return {record.frame: record for record in records}


def previews_in_s3(bucket: str, job_id: str) -> dict[int, bytes]:
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=layout.previews_prefix(job_id)).get("Contents", [])
    return {layout.frame_from_key(o["Key"]): s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def test_a_failing_frame_fails_alone_a_retry_skips_it_and_a_resume_tries_it_again(bucket: str, tmp_path: Path) -> None:
    scene = failing_frame_scene(tmp_path / "fails.blend", frame=3)
    plan = make_plan(bucket, "job-partial", upload_blend(bucket, scene), frames_per_job=6)

    first = run_worker("render", plan, index=None, AWS_BATCH_JOB_ID="batch-1", AWS_BATCH_JOB_ATTEMPT="1")
    assert first.returncode == exitcodes.EXIT_FAILED, first.stderr
    assert sorted(rendered(first.stderr)) == [1, 2, 4, 5, 6]  # the chunk went on after frame 3
    assert sorted(frames_in_s3(bucket, plan.job_id)) == [1, 2, 4, 5, 6]
    records = failure_records(bucket, plan.job_id)
    assert list(records) == [3]
    assert (records[3].error, records[3].batch_job) == ("RenderFailed", "batch-1")
    assert records[3].message == "Blender wrote no image at 000003.png"
    error = error_record(bucket, layout.error_key(plan.job_id, "render", 0, 1))
    assert error["error"] == "FramesFailed" and error["frame"] == 3
    assert error["message"] == "1 frame(s) failed: 3. RenderFailed on 3: Blender wrote no image at 000003.png"
    # Previews: one per rendered frame, never for the failed one, and none counted as a frame.
    previews = previews_in_s3(bucket, plan.job_id)
    assert sorted(previews) == [1, 2, 4, 5, 6]
    assert all(data.startswith(JPEG_SIGNATURE) for data in previews.values())

    # A Batch retry of the same job (after a lost host, say) does not try frame 3 again.
    retry = run_worker("render", plan, index=None, AWS_BATCH_JOB_ID="batch-1", AWS_BATCH_JOB_ATTEMPT="2")
    assert retry.returncode == exitcodes.EXIT_FAILED, retry.stderr
    assert rendered(retry.stderr) == [] and "frame 3: render" not in retry.stderr
    assert "skipped frame 3 (it failed earlier in this Batch job: RenderFailed)" in retry.stderr

    # A resume is another Batch job: it renders frame 3 alone, which fails again, and says so.
    resumed = run_worker("render", plan, index=None, AWS_BATCH_JOB_ID="batch-2", AWS_BATCH_JOB_ATTEMPT="1")
    assert resumed.returncode == exitcodes.EXIT_FAILED, resumed.stderr
    assert rendered(resumed.stderr) == []
    assert "frame 3 failed (RenderFailed: Blender wrote no image at 000003.png)" in resumed.stderr
    assert re.search(r"^chunk 0: 6 frames \(.*\), 1 to render$", resumed.stderr, re.MULTILINE), resumed.stderr
    assert failure_records(bucket, plan.job_id)[3].batch_job == "batch-2"


def test_a_frame_that_renders_on_resume_loses_its_failure_record(bucket: str, tiny_scene: Path) -> None:
    plan = make_plan(bucket, "job-cleared", upload_blend(bucket, tiny_scene), frames_per_job=6)
    s3 = boto3.client("s3")
    planted = FrameFailure(2, "RenderFailed", "out of memory", batch_job="batch-1")
    s3.put_object(Bucket=bucket, Key=layout.failed_key(plan.job_id, 2), Body=planted.to_json())

    same_job = run_worker("render", plan, index=None, AWS_BATCH_JOB_ID="batch-1")
    assert same_job.returncode == exitcodes.EXIT_FAILED, same_job.stderr
    assert sorted(rendered(same_job.stderr)) == [1, 3, 4, 5, 6]
    assert list(failure_records(bucket, plan.job_id)) == [2]

    resumed = run_worker("render", plan, index=None, AWS_BATCH_JOB_ID="batch-2")
    assert resumed.returncode == exitcodes.EXIT_OK, resumed.stderr
    assert rendered(resumed.stderr) == [2]
    assert failure_records(bucket, plan.job_id) == {}
    assert sorted(frames_in_s3(bucket, plan.job_id)) == [1, 2, 3, 4, 5, 6]


def test_a_frame_over_the_time_limit_is_recorded_and_the_worker_goes_on_without_a_batch_retry(
    bucket: str, tmp_path: Path
) -> None:
    """A limit far below any Cycles frame's render time (scene sync alone takes longer): every frame runs over.
    Each time the watchdog records the frame and the worker restarts itself in the same process (same attempt),
    skips what it recorded and goes on; then the chunk ends naming every frame."""
    scene = make_scene(
        tmp_path / "slow.blend", "--frame-end", "3", "--resolution", "96", "54", "--engine", "cycles", "--samples", "8"
    )
    blend = upload_blend(bucket, scene, "uploads/slow.blend")
    plan = make_plan(bucket, "job-timeout", blend, frames=(1, 3, 1), engine="CYCLES")
    result = run_worker("render", plan, index=None, AWS_BATCH_JOB_ID="batch-t", RENDER_FRAME_TIMEOUT="0.01")
    assert result.returncode == exitcodes.EXIT_FAILED, result.stderr
    assert result.stderr.count("recorded as failed; restarting for the chunk's other frames") == 3
    assert rendered(result.stderr) == [] and frames_in_s3(bucket, plan.job_id) == {}
    records = failure_records(bucket, plan.job_id)
    assert sorted(records) == [1, 2, 3] and {r.error for r in records.values()} == {"FrameTimedOut"}
    error = error_record(bucket, layout.error_key(plan.job_id, "render", 0, 1))
    assert error["error"] == "FramesFailed"
    assert error["message"] == (
        "3 frame(s) failed: 1-3. FrameTimedOut on 1-3: rendered longer than the per-frame time limit of 0.01 s "
        "(RENDER_FRAME_TIMEOUT)"
    )


def test_previews_are_display_referred_jpegs_at_most_480_wide(bucket: str, tmp_path: Path) -> None:
    """A 960x540 scene writing scene-linear OpenEXR frames: its previews are 480x270 JPEGs made with the scene's
    view settings, so raising the scene's exposure brightens the preview."""
    scene = make_scene(
        tmp_path / "wide.blend",
        "--frame-end",
        "1",
        "--resolution",
        "960",
        "540",
        "--engine",
        "workbench",
        "--file-format",
        "OPEN_EXR",
    )
    brighter = bpy_edit(scene, "scene.view_settings.exposure = 2.0", tmp_path / "bright.blend")
    means = []
    for name, blend in (("job-dark", scene), ("job-bright", brighter)):
        plan = make_plan(bucket, name, upload_blend(bucket, blend, f"uploads/{name}.blend"), frames=(1, 1, 1))
        plan = _with_exr(bucket, plan)
        result = run_worker("render", plan, index=None)
        assert result.returncode == exitcodes.EXIT_OK, result.stderr
        assert list(frames_in_s3(bucket, plan.job_id)) == [1]  # the frame keeps its format...
        previews = previews_in_s3(bucket, plan.job_id)
        assert list(previews) == [1] and previews[1].startswith(JPEG_SIGNATURE)  # ...the preview is a JPEG
        picture = decode_image(previews[1], tmp_path / f"{name}.jpg")
        assert picture.shape == (270, 480, 3)
        means.append(float(np.mean(picture)))
    assert means[1] > means[0] + 40, means


def _with_exr(bucket: str, plan):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    changed = replace(plan, file_format="OPEN_EXR", frame_extension="exr")
    boto3.client("s3").put_object(Bucket=bucket, Key=layout.plan_key(plan.job_id), Body=changed.to_json())
    return changed


def test_failure_record_round_trip_and_bad_records() -> None:
    record = FrameFailure(7, "FrameTimedOut", "rendered longer than 600 s", batch_job="abc")
    assert FrameFailure.from_json(record.to_json()) == record
    assert FrameFailure.from_json(json.dumps({"frame": 4, "message": "frame 4: boom"})).message == "boom"
    for bad in (b"not json", b"[]", b'{"frame": "3"}', b'{"frame": true}'):
        try:
            FrameFailure.from_json(bad)
        except Exception as exc:
            assert type(exc).__name__ == "InvalidInput"
        else:
            raise AssertionError(f"accepted {bad!r}")


# ---- through the local cloud: the real state machine, Lambda, worker and CLI ---------------------------------
@pytest.mark.slow
def test_a_job_with_a_failing_frame_ends_frames_failed_and_resume_renders_only_that_frame(
    local_cloud: LocalCloudProcess, tmp_path: Path
) -> None:
    scene = failing_frame_scene(tmp_path / "shot.blend", frame=3)
    result = run_cli(local_cloud, "submit", str(scene), "--frames-per-job", "3", "--wait")
    assert result.returncode == 1, result.stderr
    job_id = result.stdout.split()[0]
    expected = "FramesFailed: 1 frame(s) failed: 3. RenderFailed on 3: Blender wrote no image at 000003.png"
    assert last_line(result.stderr) == expected

    keys = _keys(local_cloud, layout.job_prefix(job_id))
    frames = {layout.frame_from_key(k) for k in keys if k.startswith(layout.frames_prefix(job_id))}
    assert frames == {1, 2, 4, 5, 6}  # the failing frame's chunk-mates are in S3
    assert not [k for k in keys if k.endswith(".mp4")], "no video from an incomplete set"
    assert not job_attempts(local_cloud, job_id, "stitch"), "the stitch must not run"
    previews = sorted(k for k in keys if k.startswith(layout.previews_prefix(job_id)))
    assert previews == [layout.preview_key(job_id, n) for n in (1, 2, 4, 5, 6)]
    first_run = job_attempts(local_cloud, job_id)
    assert sorted(n for a in first_run for n in a.rendered) == [1, 2, 4, 5, 6]
    assert all(a.number == 1 for a in first_run), "a deterministic frame failure is not retried by Batch"
    status = run_cli(local_cloud, "status", job_id)
    assert status.returncode == 1 and last_line(status.stderr) == expected

    # The file is unchanged, so the resume renders frame 3 alone, which fails again, naming it.
    resumed = run_cli(local_cloud, "resume", job_id, "--wait")
    assert resumed.returncode == 1, resumed.stderr
    assert last_line(resumed.stderr) == expected
    second_run = [a for a in job_attempts(local_cloud, job_id) if a not in first_run]
    assert second_run and all(not a.rendered for a in second_run)
    assert sorted(a.planned[2] for a in second_run if a.planned) == [0, 1]  # one chunk has frame 3 to render
    assert sum("frame 3 failed (RenderFailed" in a.text for a in second_run) == 1


def _keys(cloud: LocalCloudProcess, prefix: str) -> list[str]:
    paginator = cloud.client("s3").get_paginator("list_objects_v2")
    return [
        i["Key"] for page in paginator.paginate(Bucket=cloud.bucket, Prefix=prefix) for i in page.get("Contents", [])
    ]


def test_the_watchdog_fires_only_for_a_frame_still_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from render_worker import watchdog

    fired: list[int] = []
    seen = threading.Event()

    def expire(frame: int) -> None:
        fired.append(frame)
        seen.set()

    with watchdog.FrameWatchdog(3600.0, expire).watch(1):
        pass  # ends long before its limit
    with watchdog.FrameWatchdog(0.001, expire).watch(2):
        assert seen.wait(60), "the watchdog never fired for a frame past its limit"
    with watchdog.FrameWatchdog(None, expire).watch(3):
        pass
    assert fired == [2]
    for raw, limit in (("", None), ("0", None), ("-5", None), ("abc", None), ("2.5", 2.5), (" 600 ", 600.0)):
        monkeypatch.setenv(watchdog.ENV, raw)
        assert watchdog.frame_time_limit() == limit, raw


# ---- the explain step (the frame counter Lambda's explainFailure) ------------------------------------------------
def test_the_explain_step_names_every_failed_frame_still_missing(app: ModuleType, env: str) -> None:  # noqa: F811
    """Records of every chunk count; a record whose frame is in S3 now is stale and ignored, an unreadable one is
    left out (its frame is then named as not rendered); the stitch stage is explained as before."""
    plan = make_plan(env, "job-explained", f"s3://{env}/uploads/x.blend", frames=(1, 6, 1), frames_per_job=2)
    s3 = boto3.client("s3")
    for frame in (1, 2, 4):
        s3.put_object(Bucket=env, Key=layout.frame_key(plan.job_id, frame, "png"), Body=b"frame")
    records = {
        2: FrameFailure(2, "RenderFailed", "stale: rendered since").to_json(),
        3: FrameFailure(3, "RenderFailed", "Error: boom", batch_job="b1").to_json(),
        5: FrameFailure(5, "FrameTimedOut", "rendered longer than the per-frame time limit of 60 s").to_json(),
        6: b"{not json",
    }
    for frame, body in records.items():
        s3.put_object(Bucket=env, Key=layout.failed_key(plan.job_id, frame), Body=body)
    event = {"action": "explainFailure", "stage": "render", "jobId": f"{plan.job_id}--r2", "failure": {}}
    with pytest.raises(errors.FramesFailed) as caught:
        app.handler(event)
    assert caught.value.frame == 3
    assert caught.value.message == (
        "2 frame(s) failed: 3, 5. RenderFailed on 3: Error: boom; FrameTimedOut on 5: rendered longer than the "
        "per-frame time limit of 60 s. 1 other frame(s) were not rendered: 6."
    )
    with pytest.raises(errors.StitchFailed):
        app.handler({**event, "stage": "stitch"})
    # A resume's render job that the queue cancelled for want of capacity ran no worker: the records above are the
    # earlier run's, and the step must say NoCapacity (the On-Demand fallback catches that name), not FramesFailed.
    cancelled = {"StatusReason": f"{errors.BATCH_CAPACITY_REASON} - no instance", "JobId": "job-r2"}
    with pytest.raises(errors.NoCapacity):
        app.handler({**event, "failure": {"Error": "States.TaskFailed", "Cause": json.dumps(cancelled)}})
