"""The frame counter Lambda through its handler: real .blend files (Blender 2.79 to 5.0), real S3 (moto over HTTP).

Nothing is mocked: files are uploaded to the ``bucket`` fixture, the handler reads them with blender-asset-tracer
and writes the plan to the same bucket. Files from Blender 5.0 are made once per module with bpy.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from render_contract import errors, layout
from render_contract.plan import Plan

from tests.conftest import BLENDFILES, ROOT, make_scene

FRAME_COUNTER = ROOT / "lambda" / "frame_counter"
QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/render"
RENDER_DEF_ARN = "arn:aws:batch:us-east-1:123456789012:job-definition/render:1"
STITCH_DEF_ARN = "arn:aws:batch:us-east-1:123456789012:job-definition/stitch:1"
TINY = ("--frame-end", "6", "--resolution", "64", "36", "--engine", "workbench")
SCENES: dict[str, tuple[str, ...]] = {
    "basic": TINY,
    "zstd": (*TINY, "--compress"),
    "step3": (*TINY, "--frame-end", "10", "--frame-step", "3", "--file-format", "JPEG"),
    "ntsc": (*TINY, "--fps", "30", "--fps-base", "1.001", "--percentage", "50", "--file-format", "OPEN_EXR"),
    "multi": (*TINY, "--scene", "Main", "--extra-scene", "Alpha", "--extra-scene", "Beta"),
    "nocam": (*TINY, "--no-camera"),
}


@pytest.fixture(scope="module")
def app() -> ModuleType:
    """app.py loaded by path, the way the Lambda runtime finds it (its folder first on sys.path)."""
    if str(FRAME_COUNTER) not in sys.path:
        sys.path.insert(0, str(FRAME_COUNTER))
    spec = importlib.util.spec_from_file_location("frame_counter_app", FRAME_COUNTER / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every bpy 5.0 file the tests need, made once (two at a time: bpy runs in processes of its own)."""
    folder = tmp_path_factory.mktemp("scenes")
    with ThreadPoolExecutor(max_workers=2) as pool:
        made = pool.map(lambda item: (item[0], make_scene(folder / f"{item[0]}.blend", *item[1])), SCENES.items())
        return dict(made)


@pytest.fixture
def env(bucket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Lambda's environment as template.yaml sets it."""
    monkeypatch.setenv("BUCKET_NAME", bucket)
    monkeypatch.setenv("JOB_QUEUE_ARN", QUEUE_ARN)
    monkeypatch.setenv("RENDER_JOB_DEFINITION_ARN", RENDER_DEF_ARN)
    monkeypatch.setenv("STITCH_JOB_DEFINITION_ARN", STITCH_DEF_ARN)
    monkeypatch.setenv("MAX_VCPUS", "64")
    monkeypatch.setenv("JOB_VCPUS", "1")
    return bucket


def upload(bucket: str, source: Path | bytes, key: str) -> str:
    body = source if isinstance(source, bytes) else source.read_bytes()
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def read_plan(summary: dict[str, Any]) -> Plan:
    uri = layout.S3Uri.parse(summary["planUri"])
    return Plan.from_json(boto3.client("s3").get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read())


Run = Callable[..., dict[str, Any]]


@pytest.fixture
def run(app: ModuleType, env: str) -> Run:
    """Calls the handler as the state machine does; ``blend`` (a path or bytes) is uploaded first."""

    def call(blend: Path | bytes | None = None, job_id: str | None = None, **execution_input: Any) -> dict[str, Any]:
        if blend is not None:
            execution_input.setdefault("inputUri", upload(env, blend, f"uploads/{uuid.uuid4().hex}/shot.blend"))
        event = {"input": execution_input, "jobId": job_id or f"job-{uuid.uuid4().hex[:12]}"}
        return app.handler(event, None)

    return call


def refused(error: type[errors.RenderOnAwsError], call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Asserts the named error and that it is the Lambda errorType (the class name); returns its message."""
    with pytest.raises(error) as caught:
        call(*args, **kwargs)
    assert type(caught.value).__name__ == error.__name__ == caught.value.name
    return caught.value.message


# --- every file format -------------------------------------------------------------------------------------


SHARED_FACTS = {
    "v279_raw.blend": ("2.79", 1920, 1080, 50, False),
    "v279_gzip.blend": ("2.79", 1920, 1080, 50, False),
    "v293_raw_geometry_nodes.blend": ("2.93", 2048, 858, 100, True),
    "v301_zstd.blend": ("3.1", 1920, 1080, 50, False),
}


@pytest.mark.parametrize("name", sorted(SHARED_FACTS))
def test_shared_files_facts(app: ModuleType, name: str) -> None:
    """The README's facts of each real old file, read with BAT (raw, gzip, Zstandard; 2.79 to 3.1 headers)."""
    import blend_facts

    version, width, height, percentage, camera = SHARED_FACTS[name]
    facts = blend_facts.read_facts(BLENDFILES / name)
    scene = facts.scene
    assert (facts.blender_version, facts.scenes, facts.active_scene, scene.name) == (
        version,
        ("Scene",),
        "Scene",
        "Scene",
    )
    assert (scene.frame_start, scene.frame_end, scene.frame_step, scene.fps) == (1, 250, 1, 24)
    assert (scene.resolution_x, scene.resolution_y, scene.resolution_percentage) == (width, height, percentage)
    assert scene.has_camera is camera
    assert scene.engine == "CYCLES"
    assert scene.file_format == ("PNG" if camera else "FFMPEG")  # imtype 17 and 24 (a movie: frames go to PNG)
    assert facts.compressed is ("raw" not in name)


@pytest.mark.parametrize("name", ["v279_raw.blend", "v279_gzip.blend", "v301_zstd.blend"])
def test_shared_files_without_camera_are_refused(run: Run, name: str) -> None:
    assert "no camera" in refused(errors.NoCamera, run, BLENDFILES / name)


def test_shared_file_with_camera_plans_250_frames(run: Run) -> None:
    summary = run(BLENDFILES / "v293_raw_geometry_nodes.blend", jobName="geometry nodes")
    assert summary["frames"] == {"start": 1, "end": 250, "step": 1, "count": 250}
    assert summary["fpsExact"] == "24/1"
    plan = read_plan(summary)
    assert (plan.resolution_x, plan.resolution_y, plan.resolution_percentage) == (2048, 858, 100)
    assert (plan.blender_version, plan.file_format, plan.frame_extension) == ("2.93", "PNG", "png")
    assert plan.frames_per_job == 4 and len(plan.chunks) == 63  # auto: ceil(250 / 64 slots)
    assert sorted(frame for chunk in plan.chunks for frame in chunk) == list(range(1, 251))
    assert [chunk[0] for chunk in plan.chunks[:4]] == [1, 129, 65, 193]  # progressive: first frames span the shot


def test_corrupt_only_magic_is_unreadable(run: Run) -> None:
    refused(errors.BlendFileUnreadable, run, BLENDFILES / "corrupt_only_magic.blend")


@pytest.mark.parametrize("kind", ["basic", "zstd", "gzip"])
def test_blender_5_files_raw_and_compressed(run: Run, scenes: dict[str, Path], kind: str) -> None:
    data = scenes["zstd" if kind == "zstd" else "basic"].read_bytes()
    if kind == "gzip":
        data = gzip.compress(data, compresslevel=1)
    expected_magic = {"basic": b"BLENDER17-01v0500", "zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b"}[kind]
    assert data.startswith(expected_magic)
    summary = run(data)
    assert summary["frames"] == {"start": 1, "end": 6, "step": 1, "count": 6}
    assert (summary["fpsExact"], summary["engine"], summary["scene"]) == ("24/1", "BLENDER_WORKBENCH", "Scene")
    plan = read_plan(summary)
    assert (plan.blender_version, plan.resolution_x, plan.resolution_y, plan.has_camera) == ("5.0", 64, 36, True)
    assert summary["chunkCount"] == 6  # 6 frames over 64 slots: one frame each


# --- scene settings ----------------------------------------------------------------------------------------


def test_step_3_renders_every_third_frame(run: Run, scenes: dict[str, Path]) -> None:
    summary = run(scenes["step3"], framesPerJob=2)
    assert summary["frames"] == {"start": 1, "end": 10, "step": 3, "count": 4}
    plan = read_plan(summary)
    assert plan.chunks == [[1, 4], [7, 10]]
    assert (plan.file_format, plan.frame_extension) == ("JPEG", "jpg")


def test_ntsc_fps_stays_exact(run: Run, scenes: dict[str, Path]) -> None:
    summary = run(scenes["ntsc"])
    assert summary["fpsExact"] == "30000/1001"
    assert summary["fps"] == pytest.approx(29.97003)
    plan = read_plan(summary)
    assert (plan.fps_num, plan.fps_den, plan.resolution_percentage) == (30000, 1001, 50)
    assert (plan.file_format, plan.frame_extension) == ("OPEN_EXR", "exr")


def test_active_scene_is_used_even_when_not_first(run: Run, scenes: dict[str, Path], app: ModuleType) -> None:
    import blend_facts

    facts = blend_facts.read_facts(scenes["multi"])
    assert facts.scenes[0] != "Main" and set(facts.scenes) == {"Alpha", "Beta", "Main"}
    summary = run(scenes["multi"])
    assert summary["scene"] == "Main" and summary["frames"]["count"] == 6


def test_scene_by_name(run: Run, scenes: dict[str, Path]) -> None:
    summary = run(scenes["multi"], scene="Beta")
    assert summary["scene"] == "Beta"
    assert summary["frames"] == {"start": 1, "end": 1, "step": 1, "count": 1}  # extra scenes are one frame long
    assert summary["chunkCount"] == 1  # one chunk: the state machine's plain (non-array) job


def test_unknown_scene(run: Run, scenes: dict[str, Path]) -> None:
    message = refused(errors.SceneNotFound, run, scenes["multi"], scene="Gamma")
    assert "'Main'" in message and "'Alpha'" in message


def test_overrides_as_strings(run: Run, scenes: dict[str, Path]) -> None:
    summary = run(scenes["basic"], frameStart="2", frameEnd="5", frameStep="2", framesPerJob="1")
    assert summary["frames"] == {"start": 2, "end": 5, "step": 2, "count": 2}
    assert read_plan(summary).chunks == [[2], [4]]
    assert run(scenes["basic"], frameStart=3, frameEnd=4.0, framesPerJob=" auto ")["frames"]["count"] == 2


def test_auto_rule_uses_the_queue_slots(run: Run, scenes: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_VCPUS", "8")
    monkeypatch.setenv("JOB_VCPUS", "2")  # 4 slots
    summary = run(scenes["basic"], frameEnd=250)
    assert (summary["framesPerJob"], summary["chunkCount"], summary["framesPerJobRaised"]) == (63, 4, False)


def test_bad_environment_numbers_fall_back_to_defaults(
    run: Run, scenes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_VCPUS", "lots")
    monkeypatch.setenv("JOB_VCPUS", "0")
    assert run(scenes["basic"], frameEnd=640)["framesPerJob"] == 10  # 640 frames over the default 64 slots


def test_no_camera(run: Run, scenes: dict[str, Path]) -> None:
    refused(errors.NoCamera, run, scenes["nocam"])


# --- chunking and the summary ------------------------------------------------------------------------------


def test_more_than_10000_chunks_raises_frames_per_job(run: Run, scenes: dict[str, Path]) -> None:
    summary = run(scenes["basic"], frameEnd="25000", framesPerJob=1)
    assert (summary["framesPerJob"], summary["chunkCount"], summary["framesPerJobRaised"]) == (3, 8334, True)
    plan = read_plan(summary)
    assert plan.frames_per_job_raised and len(plan.chunks) <= 10_000
    assert sum(len(chunk) for chunk in plan.chunks) == 25_000


def test_one_chunk(run: Run, scenes: dict[str, Path]) -> None:
    summary = run(scenes["basic"], framesPerJob=100)
    assert summary["chunkCount"] == 1 and read_plan(summary).chunks == [[1, 5, 3, 2, 6, 4]]  # coarse to fine
    assert summary["batch"]["framesPerJob"] == "100"


def test_summary_is_small_for_25000_frames(run: Run, scenes: dict[str, Path]) -> None:
    summary = run(scenes["basic"], frameEnd=25_000, jobName="🎬" * 200)
    assert summary["frames"]["count"] == 25_000
    assert len(json.dumps(summary).encode("utf-8")) < 4096
    assert len(json.dumps(summary, ensure_ascii=False).encode("utf-8")) < 4096


def test_summary_feeds_the_state_machine(run: Run, scenes: dict[str, Path], env: str) -> None:
    """The fields render.asl.json reads: chunkCount, batch.*, and what its Done state passes on."""
    summary = run(scenes["basic"], job_id="asl-fields-1")
    assert summary["jobId"] == "asl-fields-1"
    assert summary["batch"] == {
        "jobName": "asl-fields-1",
        "inputUri": summary["batch"]["inputUri"],
        "outputUri": f"s3://{env}/jobs/asl-fields-1",
        "framesPerJob": "1",
    }
    assert summary["planUri"] == f"s3://{env}/jobs/asl-fields-1/job.json"
    for field in ("jobName", "scene", "frames", "fps", "fpsExact", "chunkCount", "framesPerJob", "videoUri"):
        assert field in summary


# --- inputs ------------------------------------------------------------------------------------------------


def test_manifest_input(run: Run, scenes: dict[str, Path], env: str) -> None:
    import hashlib

    blend = scenes["basic"].read_bytes()
    texture = b"not really a png, but a dependency"
    files = {
        "shots/shot 010.blend": hashlib.sha256(blend).hexdigest(),
        "tex/wood.png": hashlib.sha256(texture).hexdigest(),
    }
    upload(env, blend, layout.cas_key(files["shots/shot 010.blend"]))
    upload(env, texture, layout.cas_key(files["tex/wood.png"]))
    manifest = {"version": 1, "main": "shots/shot 010.blend", "files": files}
    uri = upload(env, json.dumps(manifest).encode(), layout.manifest_key("manifest-job"))
    summary = run(manifestUri=uri, job_id="manifest-job")
    plan = read_plan(summary)
    assert (plan.input_uri, plan.main_file, plan.job_name) == (uri, "shots/shot 010.blend", "shot 010")
    assert summary["batch"]["inputUri"] == uri

    del files["tex/wood.png"]
    files["tex/missing.png"] = "0" * 64
    uri = upload(env, json.dumps(manifest).encode(), layout.manifest_key("manifest-job-2"))
    assert "not uploaded" in refused(errors.InputNotFound, run, manifestUri=uri, job_id="manifest-job-2")


def test_a_manifest_must_be_the_jobs_own(run: Run, env: str) -> None:
    """Artists may write manifests only under their own jobs' prefixes (template.yaml's ArtistPolicy); an execution
    must not run, under its own name, a manifest that lives under another job's prefix."""
    uri = f"s3://{env}/{layout.manifest_key('someone-elses-job')}"
    assert "this job's own" in refused(errors.InvalidInput, run, manifestUri=uri, job_id="my-job")


@pytest.mark.parametrize(
    "manifest",
    [
        b"{not json",
        json.dumps({"version": 2, "main": "a.blend", "files": {"a.blend": "0" * 64}}).encode(),
        json.dumps({"version": 1, "main": "b.blend", "files": {"a.blend": "0" * 64}}).encode(),
        json.dumps({"version": 1, "main": "../a.blend", "files": {"../a.blend": "0" * 64}}).encode(),
        json.dumps({"version": 1, "main": "/etc/a.blend", "files": {"/etc/a.blend": "0" * 64}}).encode(),
        json.dumps({"version": 1, "main": "a.blend", "files": {"a.blend": "XYZ"}}).encode(),
        json.dumps([1, 2]).encode(),
    ],
)
def test_bad_manifest(run: Run, env: str, manifest: bytes) -> None:
    refused(errors.InvalidInput, run, manifestUri=upload(env, manifest, "jobs/bad/manifest.json"), job_id="bad")


def test_bare_execution_input_gets_a_job_id(app: ModuleType, env: str, scenes: dict[str, Path]) -> None:
    uri = upload(env, scenes["basic"], "uploads/bare.blend")
    summary = app.handler({"inputUri": uri, "framesPerJob": "auto"}, None)
    assert layout.check_job_id(summary["jobId"])
    assert summary["planUri"] == f"s3://{env}/jobs/{summary['jobId']}/job.json"
    assert read_plan(summary).main_file == "bare.blend"
    assert app.handler({"inputUri": uri}, None)["jobId"] != summary["jobId"]


def test_seed_payload_is_accepted(run: Run, scenes: dict[str, Path], env: str) -> None:
    """The seed's fields: outputUri (checked, then ignored), the stack's own ARNs, unknown fields ignored."""
    summary = run(
        scenes["basic"],
        job_id="seed-1",
        jobName="Pottery",
        outputUri=f"s3://{env}/jobs/someone-else",
        jobDefinitionArn=RENDER_DEF_ARN,
        jobQueueArn=QUEUE_ARN,
        futureField={"x": 1},
    )
    assert summary["batch"]["outputUri"] == f"s3://{env}/jobs/seed-1"
    assert summary["videoUri"] == f"s3://{env}/jobs/seed-1/Pottery.mp4"


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "a/b/c", "line\nbreak\r\x00\x1b[31m", "x" * 1024, "🎬 Shot 🎥 über", "..", "/", "\u202eevil"],
)
def test_job_names_are_sanitised(run: Run, scenes: dict[str, Path], env: str, name: str) -> None:
    job_id = f"name-{uuid.uuid4().hex[:8]}"
    summary = run(scenes["basic"], job_id=job_id, jobName=name)
    plan = read_plan(summary)
    assert len(plan.job_name) <= 128 and summary["jobName"] == plan.job_name
    assert not any(ord(char) < 32 or char == "\u202e" for char in plan.job_name)
    video_name = plan.video_key.removeprefix(f"jobs/{job_id}/")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.mp4", video_name) and ".." not in video_name
    keys = [item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=env, Prefix="jobs/")["Contents"]]
    assert f"jobs/{job_id}/job.json" in keys
    if "Shot" in name:
        assert plan.job_name == name and video_name == "Shot_uber.mp4"


# --- every error -------------------------------------------------------------------------------------------


def test_outside_bucket(run: Run, scenes: dict[str, Path], env: str) -> None:
    refused(errors.InputOutsideBucket, run, inputUri="s3://another-bucket/shot.blend")
    refused(errors.InputOutsideBucket, run, manifestUri="s3://another-bucket/jobs/x/manifest.json")
    refused(errors.InputOutsideBucket, run, scenes["basic"], outputUri="s3://another-bucket/jobs/x")


def test_missing_object(run: Run, env: str) -> None:
    refused(errors.InputNotFound, run, inputUri=f"s3://{env}/uploads/nothing-here.blend")
    refused(errors.InputNotFound, run, manifestUri=f"s3://{env}/jobs/nothing/manifest.json", job_id="nothing")


@pytest.mark.parametrize("case", ["empty", "text", "png", "truncated", "half", "bad-gzip", "bad-zstd", "header-only"])
def test_unreadable_files(run: Run, scenes: dict[str, Path], case: str) -> None:
    blend = scenes["basic"].read_bytes()
    data = {
        "empty": b"",
        "text": b"hello, I am not a blend file\n" * 10,
        "png": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "truncated": blend[:-10],
        "half": blend[: len(blend) // 2],
        "bad-gzip": gzip.compress(blend)[:5000],
        "bad-zstd": scenes["zstd"].read_bytes()[:5000],
        "header-only": blend[:17],
    }[case]
    refused(errors.BlendFileUnreadable, run, data)


@pytest.mark.parametrize(
    "overrides",
    [
        {"frameStart": 10, "frameEnd": 5},
        {"frameStep": 0},
        {"frameStep": "-1"},
        {"frameEnd": 2_000_000},
        {"frameStart": "-1048575"},
        {"frameStart": -999_999, "frameEnd": 999_999},
    ],
)
def test_no_frames(run: Run, scenes: dict[str, Path], overrides: dict[str, Any]) -> None:
    refused(errors.NoFramesToRender, run, scenes["basic"], **overrides)


@pytest.mark.parametrize(
    "fields",
    [
        {"framesPerJob": 0},
        {"framesPerJob": -1},
        {"framesPerJob": "abc"},
        {"framesPerJob": 1e9},
        {"framesPerJob": "1e9"},
        {"framesPerJob": True},
        {"framesPerJob": 1.5},
        {"frameStart": "abc"},
        {"frameEnd": [5]},
        {"frameStep": False},
        {"scene": 5},
        {"scene": ""},
        {"jobName": 5},
        {"jobDefinitionArn": "arn:aws:batch:us-east-1:999999999999:job-definition/evil:1"},
        {"jobQueueArn": "arn:aws:batch:us-east-1:999999999999:job-queue/evil"},
        {"inputUri": "https://example.com/shot.blend"},
        {"inputUri": 42},
    ],
)
def test_invalid_fields(run: Run, scenes: dict[str, Path], fields: dict[str, Any]) -> None:
    blend = None if "inputUri" in fields else scenes["basic"]
    refused(errors.InvalidInput, run, blend, **fields)


@pytest.mark.parametrize("event", [[], "s3://x/y.blend", {"input": "text"}, {"input": {}}, {"input": [1]}])
def test_malformed_events(app: ModuleType, env: str, event: Any) -> None:
    refused(errors.InvalidInput, app.handler, event, None)


def test_invalid_job_id(run: Run, scenes: dict[str, Path]) -> None:
    refused(errors.InvalidInput, run, scenes["basic"], job_id="../escape")


def test_no_temp_files_left(run: Run, scenes: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The download and BAT's decompressed copy are deleted after success and after errors."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run(scenes["zstd"])
    refused(errors.BlendFileUnreadable, run, scenes["zstd"].read_bytes()[:-100])
    refused(errors.SceneNotFound, run, scenes["zstd"], scene="nope")
    assert os.listdir(tmp_path) == []


def test_lambda_code_is_bpy_free() -> None:
    for source in FRAME_COUNTER.glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+bpy\b", source.read_text(), re.MULTILINE), source


# --- through the whole state machine on the local cloud ----------------------------------------------------


def _execute(cloud: Any, execution_input: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Starts an execution with this input as a client would and waits for it to leave RUNNING."""
    import time

    sfn = cloud.client("stepfunctions")
    name = f"fc-{uuid.uuid4().hex[:16]}"
    arn = sfn.start_execution(
        stateMachineArn=cloud.outputs["StateMachineArn"], name=name, input=json.dumps(execution_input)
    )["executionArn"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.5)
    raise AssertionError(f"execution {name} still running after {timeout} s")


@pytest.mark.slow
def test_named_errors_end_the_execution(local_cloud: Any, scenes: dict[str, Path]) -> None:
    """Each refusal is the execution's Error, with the handler's message as its Cause."""
    s3 = local_cloud.client("s3")
    bucket = local_cloud.bucket
    s3.put_object(Bucket=bucket, Key="uploads/fc-good.blend", Body=scenes["basic"].read_bytes())
    s3.put_object(Bucket=bucket, Key="uploads/fc-garbage.blend", Body=b"garbage" * 100)
    good = f"s3://{bucket}/uploads/fc-good.blend"
    cases = [
        ({"inputUri": good, "framesPerJob": 0}, "InvalidInput"),
        ({"inputUri": "s3://someone-elses-bucket/a.blend"}, "InputOutsideBucket"),
        ({"inputUri": f"s3://{bucket}/uploads/fc-missing.blend"}, "InputNotFound"),
        ({"inputUri": f"s3://{bucket}/uploads/fc-garbage.blend"}, "BlendFileUnreadable"),
        ({"inputUri": good, "frameStart": 9, "frameEnd": 3}, "NoFramesToRender"),
        ({"inputUri": good, "scene": "Nope"}, "SceneNotFound"),
    ]
    for execution_input, error in cases:
        described = _execute(local_cloud, execution_input)
        assert (described["status"], described.get("error")) == ("FAILED", error), execution_input
        assert described.get("cause"), execution_input


def test_explain_failure_reraises_the_workers_own_error(app: ModuleType, env: str) -> None:
    """After a failed Batch step the execution's error is the worker's name, with its message and frame."""
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3")
    record = {"error": "MissingFrames", "message": "frames 4, 5 were never rendered", "frame": None, "attempt": 1}
    s3.put_object(Bucket=env, Key=layout.error_key(job_id, "stitch", 0, 1), Body=json.dumps(record).encode())
    event = {"action": "explainFailure", "stage": "stitch", "jobId": job_id, "failure": {"Cause": "{}"}}
    assert "frames 4, 5" in refused(errors.MissingFrames, app.handler, event)

    record = {"error": "RenderFailed", "message": "frame 3: Error: Image too small", "frame": 3, "attempt": 2}
    s3.put_object(Bucket=env, Key=layout.error_key(job_id, "render", 1, 2), Body=json.dumps(record).encode())
    with pytest.raises(errors.RenderFailed) as caught:
        app.handler({**event, "stage": "render"})
    assert caught.value.frame == 3 and "Image too small" in caught.value.message


def test_explain_failure_without_a_record_keeps_batchs_reason(app: ModuleType, env: str) -> None:
    cause = json.dumps({"StatusReason": "Host EC2 (instance i-0abc) terminated."})
    event = {"action": "explainFailure", "stage": "render", "jobId": f"job-{uuid.uuid4().hex[:8]}"}
    message = refused(
        errors.RenderFailed, app.handler, {**event, "failure": {"Error": "States.TaskFailed", "Cause": cause}}
    )
    assert message == "Host EC2 (instance i-0abc) terminated."
    refused(errors.InvalidInput, app.handler, {**event, "jobId": "../other"})


@pytest.mark.parametrize(
    ("expression", "python"),
    [
        ("frame * 2", False),
        ("sin(frame / 10) * var + 1.5", False),
        ("var if frame > 10 else -var", False),
        ("", False),
        ("bpy.context.scene.frame_current", True),
        ('__import__("os").getpid()', True),
        ("(lambda: 3.0)()", True),
        ("unknown_name * 2", True),
        ("values[0]", True),
        ("'text'", True),
    ],
)
def test_which_driver_expressions_need_python(app: ModuleType, expression: str, python: bool) -> None:
    assert blend_facts_module().needs_python(expression, frozenset({"var"})) is python


def blend_facts_module() -> ModuleType:
    import blend_facts

    return blend_facts


def test_registered_scripts_and_python_drivers_are_named(app: ModuleType, tmp_path: Path) -> None:
    from tests.reliability.support import bpy_edit

    scene = make_scene(tmp_path / "plain.blend", *TINY)
    code = (
        "text = bpy.data.texts.new('rig_ui.py'); text.write('x = 1'); text.use_module = True\n"
        "bpy.data.texts.new('notes.txt').write('not code')\n"
        "cube = next(obj for obj in scene.objects if obj.name.endswith('-cube'))\n"
        "simple = cube.driver_add('location', 0).driver; simple.type = 'SCRIPTED'; simple.expression = 'frame * 2'\n"
        "full = cube.driver_add('location', 2).driver; full.type = 'SCRIPTED'\n"
        "full.expression = 'bpy.context.scene.frame_current / 10'\n"
    )
    facts = blend_facts_module().read_facts(bpy_edit(scene, code, tmp_path / "scripted.blend"))
    assert facts.python.scripts == ("rig_ui.py",)
    assert facts.python.drivers == ("Scene-cube: location[2] = bpy.context.scene.frame_current / 10",)
    assert blend_facts_module().read_facts(scene).python_use == []


# --- Blender runtimes (issue 15.1) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_by_42(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file saved by bpy 4.2 itself (its runtime's Python: the local cloud's cached environment)."""
    from localcloud import runtimes as local_runtimes

    python = local_runtimes.python_for("4.2")
    return make_scene(tmp_path_factory.mktemp("v42") / "v42.blend", *TINY, python=python)


def test_the_plan_names_the_runtime_of_the_files_series(run: Run, scenes: dict[str, Path], saved_by_42: Path) -> None:
    assert saved_by_42.read_bytes()[:12] == b"BLENDER-v402"
    summary = run(saved_by_42)
    plan = read_plan(summary)
    assert (plan.blender_version, plan.blender_runtime, plan.blender_runtime_version) == ("4.2", "4.2", "4.2.23")
    assert plan.runtime_notices == [] and summary["blender"] == {"runtime": "4.2", "version": "4.2.23"}
    newest = read_plan(run(scenes["basic"]))
    assert (newest.blender_runtime, newest.blender_runtime_version, newest.runtime_notices) == ("5.0", "5.0.1", [])


def test_an_old_file_renders_on_the_nearest_newer_runtime_with_a_notice(run: Run) -> None:
    summary = run(BLENDFILES / "v293_raw_geometry_nodes.blend")
    plan = read_plan(summary)
    assert (plan.blender_version, plan.blender_runtime) == ("2.93", "4.2")
    assert plan.runtime_notices[0].startswith("OtherBlenderRuntime: the farm has no Blender 2.93 runtime")
    assert summary["runtimeNotices"] == plan.runtime_notices


def test_a_file_newer_than_every_runtime_fails_before_any_plan(run: Run, saved_by_42: Path, env: str) -> None:
    data = saved_by_42.read_bytes()
    future = data[:9] + b"601" + data[12:]  # the header of a Blender 6.1 file, otherwise the same file
    message = refused(errors.BlenderTooNew, run, future, job_id="job-too-new")
    assert "Blender 6.1, newer than every runtime" in message
    listed = boto3.client("s3").list_objects_v2(Bucket=env, Prefix=layout.plan_key("job-too-new"))
    assert listed.get("KeyCount", 0) == 0


def test_the_artists_blender_and_an_override_reach_the_plan(run: Run, saved_by_42: Path) -> None:
    mismatch = read_plan(run(saved_by_42, blenderVersion="4.5.3"))
    assert (mismatch.blender_runtime, mismatch.artist_blender_version) == ("4.2", "4.5.3")
    assert mismatch.runtime_notices[0].startswith("BlenderVersionMismatch: your Blender is 4.5.3")
    same = read_plan(run(saved_by_42, blenderVersion=[4, 2, 1]))
    assert (same.artist_blender_version, same.runtime_notices) == ("4.2.1", [])
    override = read_plan(run(saved_by_42, blenderRuntime="4.5"))
    assert (override.blender_runtime, override.blender_runtime_version) == ("4.5", "4.5.15")
    assert override.runtime_notices[0].startswith("OtherBlenderRuntime: rendering with Blender 4.5.15 as asked")
    refused(errors.UnknownRuntime, run, saved_by_42, blenderRuntime="4.4")
