"""The worker (container/render_worker) as Batch runs it: a process with the job definition's command line, real
bpy, real S3 over HTTP (moto server), real FFmpeg; videos probed with PyAV.

Scenes are tiny (Workbench, 64x36) so the whole file stays fast; the interruption tests use a small Cycles scene
so that a frame takes long enough to be caught in flight.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import boto3
import pytest
from render_contract import exitcodes, layout
from render_contract.plan import Plan, chunk, frame_numbers
from render_contract.runtimes import RUNTIMES

from tests.conftest import ROOT, make_scene

RENDERED = re.compile(r"^rendered frame (\d+)$", re.MULTILINE)
SKIPPED = re.compile(r"^skipped frame (\d+) \(already in S3\)$", re.MULTILINE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"


def make_plan(
    bucket: str,
    job_id: str,
    input_uri: str,
    *,
    frames: tuple[int, int, int] = (1, 6, 1),
    frames_per_job: int = 100,
    fps: tuple[int, int] = (24, 1),
    main_file: str = "tiny.blend",
    engine: str = "BLENDER_WORKBENCH",
    resolution: tuple[int, int] = (64, 36),
    job_name: str = "Tiny shot",
) -> Plan:
    """A plan as the frame counter writes it, put at jobs/<id>/job.json."""
    start, end, step = frames
    chunks, used, raised = chunk(frame_numbers(start, end, step), frames_per_job)
    plan = Plan(
        job_id=job_id,
        job_name=job_name,
        scene="Scene",
        frame_start=start,
        frame_end=end,
        frame_step=step,
        fps_num=fps[0],
        fps_den=fps[1],
        engine=engine,
        resolution_x=resolution[0],
        resolution_y=resolution[1],
        resolution_percentage=100,
        file_format="PNG",
        frame_extension="png",
        has_camera=True,
        blender_version="5.0.1",
        input_uri=input_uri,
        main_file=main_file,
        output_uri=f"s3://{bucket}/jobs/{job_id}",
        video_key=layout.video_key(job_id, job_name),
        frames_per_job=used,
        frames_per_job_raised=raised,
        chunks=chunks,
    )
    boto3.client("s3").put_object(Bucket=bucket, Key=layout.plan_key(job_id), Body=plan.to_json())
    return plan


def upload_blend(bucket: str, path: Path, key: str = "uploads/tiny.blend") -> str:
    boto3.client("s3").upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def worker_command(action: str, plan: Plan) -> list[str]:
    """The job definition's command: ["Ref::action", "-i", ..., "-o", ..., "-f", ...]."""
    return [
        sys.executable,
        "-m",
        "render_worker.cli",
        action,
        "-i",
        plan.input_uri,
        "-o",
        plan.output_uri,
        "-f",
        str(plan.frames_per_job),
    ]


def worker_env(index: int | None = 0, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("AWS_BATCH_JOB_ARRAY_INDEX", None)
    if index is not None:
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
    return env


def run_worker(action: str, plan: Plan, index: int | None = 0, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        worker_command(action, plan),
        env=worker_env(index, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=180,
    )


def rendered(log: str) -> list[int]:
    return [int(n) for n in RENDERED.findall(log)]


def frames_in_s3(bucket: str, job_id: str) -> dict[int, bytes]:
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=layout.frames_prefix(job_id)).get("Contents", [])
    return {
        layout.frame_from_key(obj["Key"]): s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        for obj in listing
    }


def error_record(bucket: str, key: str) -> dict:
    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def probe(bucket: str, key: str, tmp_path: Path) -> dict:
    local = tmp_path / "probe.mp4"
    boto3.client("s3").download_file(bucket, key, str(local))
    with av.open(str(local)) as container:
        stream = container.streams.video[0]
        facts = {
            "codec": stream.codec_context.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "pix_fmt": stream.codec_context.pix_fmt,
            "average_rate": stream.average_rate,
        }
        facts["frames"] = sum(1 for _ in container.decode(stream))
    return facts


def test_render_uploads_every_frame_and_a_rerun_skips_them(bucket: str, tiny_scene: Path) -> None:
    plan = make_plan(bucket, "job-render", upload_blend(bucket, tiny_scene), frames_per_job=3)
    assert plan.chunks == [[1, 3, 6], [5, 2, 4]]  # progressive order, dealt round-robin

    first = run_worker("render", plan, index=1)
    assert first.returncode == exitcodes.EXIT_OK, first.stderr
    assert sorted(rendered(first.stderr)) == [2, 4, 5]
    assert [int(n) for n in re.findall(r"frame (\d+): render", first.stderr)] == [5, 2, 4]  # in list order
    assert sorted(frames_in_s3(bucket, plan.job_id)) == [2, 4, 5]
    assert all(data.startswith(PNG_SIGNATURE) for data in frames_in_s3(bucket, plan.job_id).values())

    again = run_worker("render", plan, index=1)
    assert again.returncode == exitcodes.EXIT_OK, again.stderr
    assert rendered(again.stderr) == []
    assert [int(n) for n in SKIPPED.findall(again.stderr)] == [5, 2, 4]

    no_index = run_worker("render", plan, index=None)  # a plain job (one chunk) has no array index: chunk 0
    assert no_index.returncode == exitcodes.EXIT_OK, no_index.stderr
    assert sorted(rendered(no_index.stderr)) == [1, 3, 6]
    assert sorted(frames_in_s3(bucket, plan.job_id)) == [1, 2, 3, 4, 5, 6]


@pytest.fixture
def slow_scene(tmp_path: Path) -> Path:
    """Cycles at 96x54: a few tenths of a second a frame, so a signal can land while a frame renders."""
    return make_scene(
        tmp_path / "slow.blend",
        "--frame-end",
        "10",
        "--resolution",
        "96",
        "54",
        "--engine",
        "cycles",
        "--samples",
        "24",
    )


def _start_and_wait_for_first_frame(plan: Plan) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        worker_command("render", plan),
        env=worker_env(0),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    for line in process.stderr:
        lines.append(line)
        if RENDERED.match(line.rstrip("\n")):
            break
    return process, lines


def test_sigterm_finishes_the_frame_in_flight_then_exits_75_and_the_retry_renders_the_rest(
    bucket: str, slow_scene: Path
) -> None:
    plan = make_plan(bucket, "job-sigterm", upload_blend(bucket, slow_scene, "uploads/slow.blend"), frames=(1, 10, 1))
    process, lines = _start_and_wait_for_first_frame(plan)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    log = "".join(lines) + rest
    assert process.returncode == exitcodes.EXIT_INTERRUPTED, log
    done = rendered(log)
    assert 1 <= len(done) < 10, log
    assert sorted(frames_in_s3(bucket, plan.job_id)) == sorted(done)  # every frame it logged is in S3, and no other
    assert (
        not boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=layout.errors_prefix(plan.job_id)).get("Contents")
    )

    retry = run_worker("render", plan, index=0, AWS_BATCH_JOB_ATTEMPT="2")
    assert retry.returncode == exitcodes.EXIT_OK, retry.stderr
    assert sorted(rendered(retry.stderr)) == sorted(set(range(1, 11)) - set(done))
    assert sorted(frames_in_s3(bucket, plan.job_id)) == list(range(1, 11))


def test_sigkill_mid_chunk_leaves_only_whole_frames(bucket: str, slow_scene: Path) -> None:
    plan = make_plan(bucket, "job-sigkill", upload_blend(bucket, slow_scene, "uploads/slow.blend"), frames=(1, 10, 1))
    process, _ = _start_and_wait_for_first_frame(plan)
    process.kill()  # as a lost Spot host or the local cloud's drill would: no chance to clean up
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    kept = frames_in_s3(bucket, plan.job_id)
    assert 1 <= len(kept) < 10
    for data in kept.values():  # a frame is in S3 whole or not at all
        assert data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END)

    retry = run_worker("render", plan, index=0, AWS_BATCH_JOB_ATTEMPT="2")
    assert retry.returncode == exitcodes.EXIT_OK, retry.stderr
    assert sorted(rendered(retry.stderr)) == sorted(set(range(1, 11)) - set(kept))


def test_corrupt_blend_exits_65_with_the_cause_in_errors(bucket: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.blend"
    broken.write_bytes(b"BLENDER-v500" + b"\x00garbage" * 64)
    plan = make_plan(
        bucket, "job-corrupt", upload_blend(bucket, broken, "uploads/broken.blend"), main_file="broken.blend"
    )

    result = run_worker("render", plan, index=0, AWS_BATCH_JOB_ATTEMPT="2")
    assert result.returncode == exitcodes.EXIT_FAILED, result.stderr
    assert "BlendFileUnreadable" in result.stderr
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "render-chunk-0-attempt-2.json")
    assert record["error"] == "BlendFileUnreadable"
    assert record["chunk"] == 0 and record["attempt"] == 2 and record["frame"] is None
    assert record["message"]
    assert frames_in_s3(bucket, plan.job_id) == {}


def _put_manifest(bucket: str, job_id: str, main: str, files: dict[str, bytes]) -> str:
    import hashlib

    s3 = boto3.client("s3")
    listing = {}
    for rel, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        s3.put_object(Bucket=bucket, Key=layout.cas_key(digest), Body=data)
        listing[rel] = digest
    key = layout.manifest_key(job_id)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"version": 1, "main": main, "files": listing}))
    return f"s3://{bucket}/{key}"


def test_manifest_input_materialises_nested_relative_paths(bucket: str, tiny_scene: Path) -> None:
    main = "shots/sh010/tiny.blend"
    uri = _put_manifest(
        bucket, "job-manifest", main, {main: tiny_scene.read_bytes(), "shots/textures/grain.bin": b"\x01" * 100}
    )
    plan = make_plan(bucket, "job-manifest", uri, frames=(1, 2, 1), main_file=main)
    result = run_worker("render", plan)
    assert result.returncode == exitcodes.EXIT_OK, result.stderr
    assert "fetched 2 files of manifest" in result.stderr
    assert sorted(rendered(result.stderr)) == [1, 2]


def test_manifest_path_that_climbs_out_is_refused(bucket: str, tiny_scene: Path) -> None:
    uri = _put_manifest(bucket, "job-evil", "tiny.blend", {"tiny.blend": tiny_scene.read_bytes(), "../evil": b"x"})
    plan = make_plan(bucket, "job-evil", uri, frames=(1, 1, 1))
    result = run_worker("render", plan)
    assert result.returncode == exitcodes.EXIT_FAILED, result.stderr
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "render-chunk-0-attempt-1.json")
    assert record["error"] == "InvalidInput" and "'..'" in record["message"]


def test_movie_output_is_forced_to_the_plans_still_format(bucket: str, tiny_scene: Path, tmp_path: Path) -> None:
    movie = tmp_path / "movie.blend"
    script = (
        "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
        "s = bpy.data.scenes['Scene']; s.render.image_settings.media_type = 'VIDEO'; "
        "s.render.image_settings.file_format = 'FFMPEG'; bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", script, str(tiny_scene), str(movie)], check=True, capture_output=True)
    plan = make_plan(bucket, "job-movie", upload_blend(bucket, movie, "uploads/movie.blend"), frames=(1, 2, 1))
    result = run_worker("render", plan)
    assert result.returncode == exitcodes.EXIT_OK, result.stderr
    assert "output format forced from FFMPEG to PNG" in result.stderr
    assert all(data.startswith(PNG_SIGNATURE) for data in frames_in_s3(bucket, plan.job_id).values())


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present: the no-GPU error cannot happen")
def test_gpu_requested_without_a_gpu_is_a_clear_render_failure(bucket: str, tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "c.blend", "--frame-end", "1", "--resolution", "32", "18", "--engine", "cycles")
    plan = make_plan(
        bucket, "job-gpu", upload_blend(bucket, scene, "uploads/c.blend"), frames=(1, 1, 1), engine="CYCLES"
    )
    result = run_worker("render", plan, RENDER_DEVICE="GPU")
    assert result.returncode == exitcodes.EXIT_FAILED, result.stderr
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "render-chunk-0-attempt-1.json")
    assert record["error"] == "RenderFailed" and "OptiX or CUDA" in record["message"]


def test_missing_plan_is_deterministic_and_unreachable_s3_is_transient(bucket: str) -> None:
    plan = make_plan(bucket, "job-noplan", f"s3://{bucket}/uploads/none.blend")
    boto3.client("s3").delete_object(Bucket=bucket, Key=layout.plan_key(plan.job_id))
    missing = run_worker("render", plan)
    assert missing.returncode == exitcodes.EXIT_FAILED, missing.stderr
    assert "InputNotFound" in missing.stderr

    unreachable = run_worker("stitch", plan, AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")
    assert unreachable.returncode == exitcodes.EXIT_INTERRUPTED, unreachable.stderr


def test_stitch_a_frame_step_of_3_with_odd_dimensions(bucket: str, tmp_path: Path) -> None:
    scene = make_scene(
        tmp_path / "step.blend",
        *("--frame-end", "10", "--frame-step", "3", "--resolution", "65", "37", "--engine", "workbench"),
    )
    plan = make_plan(
        bucket,
        "job-step",
        upload_blend(bucket, scene, "uploads/step.blend"),
        frames=(1, 10, 3),
        resolution=(65, 37),
        main_file="step.blend",
    )
    assert plan.frames == [1, 4, 7, 10]
    assert run_worker("render", plan).returncode == exitcodes.EXIT_OK
    result = run_worker("stitch", plan)
    assert result.returncode == exitcodes.EXIT_OK, result.stderr

    facts = probe(bucket, layout.video_key(plan.job_id, plan.job_name), tmp_path)
    assert facts == {
        "codec": "h264",
        "width": 66,
        "height": 38,
        "pix_fmt": "yuv420p",
        "average_rate": Fraction(24, 1),
        "frames": 4,
    }
    assert sorted(frames_in_s3(bucket, plan.job_id)) == [1, 4, 7, 10]  # the frames are kept


def test_stitch_keeps_30000_1001_exact(bucket: str, tmp_path: Path) -> None:
    scene = make_scene(
        tmp_path / "ntsc.blend",
        *(
            "--frame-end",
            "5",
            "--fps",
            "30",
            "--fps-base",
            "1.001",
            "--resolution",
            "64",
            "36",
            "--engine",
            "workbench",
        ),
    )
    plan = make_plan(
        bucket, "job-ntsc", upload_blend(bucket, scene, "uploads/ntsc.blend"), frames=(1, 5, 1), fps=(30000, 1001)
    )
    assert run_worker("render", plan).returncode == exitcodes.EXIT_OK
    result = run_worker("stitch", plan)
    assert result.returncode == exitcodes.EXIT_OK, result.stderr
    facts = probe(bucket, layout.video_key(plan.job_id, plan.job_name), tmp_path)
    assert facts["average_rate"] == Fraction(30000, 1001)
    assert facts["frames"] == 5
    assert (facts["width"], facts["height"], facts["pix_fmt"], facts["codec"]) == (64, 36, "yuv420p", "h264")


def test_stitch_with_a_missing_frame_fails_naming_it(bucket: str, tiny_scene: Path) -> None:
    plan = make_plan(bucket, "job-missing", upload_blend(bucket, tiny_scene))
    assert run_worker("render", plan).returncode == exitcodes.EXIT_OK
    boto3.client("s3").delete_object(Bucket=bucket, Key=layout.frame_key(plan.job_id, 4, "png"))

    result = run_worker("stitch", plan)
    assert result.returncode == exitcodes.EXIT_FAILED, result.stderr
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "stitch-attempt-1.json")
    assert record["error"] == "MissingFrames"
    assert record["frame"] == 4 and record["chunk"] is None
    assert "1 of 6 planned frames are not in S3: 4" in record["message"]
    assert (
        not boto3.client("s3")
        .list_objects_v2(Bucket=bucket, Prefix=layout.video_key(plan.job_id, plan.job_name))
        .get("Contents")
    )


def _runtime_plan(bucket: str, tiny_scene: Path, job_id: str, series: str) -> Plan:
    plan = make_plan(bucket, job_id, upload_blend(bucket, tiny_scene), frames=(1, 1, 1))
    plan.blender_runtime, plan.blender_runtime_version = series, RUNTIMES[series]
    boto3.client("s3").put_object(Bucket=bucket, Key=layout.plan_key(job_id), Body=plan.to_json())
    return plan


def test_a_runtime_the_worker_lacks_is_runtime_missing_not_a_silent_render(
    bucket: str, tiny_scene: Path, tmp_path: Path
) -> None:
    plan = _runtime_plan(bucket, tiny_scene, "job-noruntime", "4.2")
    done = run_worker("render", plan, RENDER_RUNTIMES=str(tmp_path / "none"), RENDER_RUNTIME_INSTALL="")
    assert done.returncode == exitcodes.EXIT_FAILED, done.stderr
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "render-chunk-0-attempt-1.json")
    assert record["error"] == "RuntimeMissing" and "no Blender 4.2 runtime" in record["message"], record
    assert not rendered(done.stderr)
    failing = run_worker("render", plan, RENDER_RUNTIMES=str(tmp_path / "none"), RENDER_RUNTIME_INSTALL="false")
    assert failing.returncode == exitcodes.EXIT_FAILED and "could not install the Blender 4.2" in failing.stderr


def test_the_worker_re_executes_under_the_plans_runtime(bucket: str, tiny_scene: Path) -> None:
    from localcloud import runtimes as local_runtimes

    plan = _runtime_plan(bucket, tiny_scene, "job-runtime45", "4.5")
    python = local_runtimes.python_for("4.5")
    done = run_worker("render", plan, RENDER_RUNTIMES=str(python.parent.parent.parent))
    assert done.returncode == 0, done.stderr
    assert "re-executing under the Blender 4.5 runtime" in done.stderr
    assert f"rendering with Blender {RUNTIMES['4.5']}" in done.stderr and rendered(done.stderr) == [1]
