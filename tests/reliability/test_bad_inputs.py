"""A catalogue of bad inputs (issue 9 item 2): each ends in its named error, in the execution and in what the CLI
shows, and nothing is written outside the job's own prefix (``jobs/<jobId>/``) or the content-addressed store.

Executions are started by hand with crafted inputs (what a buggy or hostile client could send, past every check
the CLI makes); the CLI cases run the real command line. The add-on shows the same core errors (its own tests
belong to the add-on engineer).
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene

from .support import (
    bpy_edit,
    bucket_keys,
    execution_arn,
    foreign_keys,
    last_line,
    new_job_id,
    put_cas,
    start_execution,
    wait_execution,
    wait_for,
    workers,
)

SFN_INPUT_LIMIT = 262_144
"""StartExecution's ``input``: "Length Constraints: Maximum length of 262144" (bytes, UTF-8), per the Step Functions
API reference; botocore does not check maximum lengths, the service does."""


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("catalogue")
    tiny = ("--resolution", "64", "36", "--engine", "workbench")
    made = {
        "two": make_scene(base / "two.blend", "--frame-end", "2", *tiny),
        "one": make_scene(base / "one.blend", "--frame-end", "1", *tiny),
        "nocamera": make_scene(base / "nocamera.blend", "--frame-end", "2", "--no-camera", *tiny),
    }
    good = made["two"].read_bytes()
    noise = random.Random(9).randbytes(4096)  # fixed, so the damage (and BAT's reaction to it) is reproducible
    for name, data in {
        "corrupt": good[:64] + noise + good[64 + 4096 :],
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "notblend": b"\x89PNG\r\n\x1a\n" + noise[:2048],
    }.items():
        (base / f"{name}.blend").write_bytes(data)
        made[name] = base / f"{name}.blend"
    textured = base / "textured" / "textured.blend"
    textured.parent.mkdir()
    made["textured"] = bpy_edit(
        made["two"],
        "image = bpy.data.images.new('wood', 4, 4)\n"
        "image.source = 'FILE'\n"
        "image.filepath = '//textures/wood.png'\n"
        "image.use_fake_user = True",
        out=textured,
    )
    return made


def _case_inputs(cloud: LocalCloudProcess, scenes: dict[str, Path]) -> list[tuple[str, dict[str, Any] | str, str]]:
    """(tag, execution input, expected error) for every execution-level case."""
    bucket = cloud.bucket
    uri = {name: put_cas(cloud, scenes[name].read_bytes()) for name in ("two", "nocamera", "corrupt", "truncated")}
    uri["empty"] = put_cas(cloud, b"")
    uri["notblend"] = put_cas(cloud, scenes["notblend"].read_bytes())
    good = uri["two"]
    return [
        ("corrupt", {"inputUri": uri["corrupt"]}, "BlendFileUnreadable"),
        ("truncated", {"inputUri": uri["truncated"]}, "BlendFileUnreadable"),
        ("empty", {"inputUri": uri["empty"]}, "BlendFileUnreadable"),
        ("notblend", {"inputUri": uri["notblend"]}, "BlendFileUnreadable"),
        ("end-before-start", {"inputUri": good, "frameStart": 5, "frameEnd": 2}, "NoFramesToRender"),
        ("step-0", {"inputUri": good, "frameStep": 0}, "NoFramesToRender"),
        ("step-negative", {"inputUri": good, "frameStep": -2}, "NoFramesToRender"),
        ("too-many-frames", {"inputUri": good, "frameStart": 1, "frameEnd": 1_048_574}, "NoFramesToRender"),
        ("fpj-0", {"inputUri": good, "framesPerJob": 0}, "InvalidInput"),
        ("fpj-minus-1", {"inputUri": good, "framesPerJob": -1}, "InvalidInput"),
        ("fpj-abc", {"inputUri": good, "framesPerJob": "abc"}, "InvalidInput"),
        ("fpj-1e9", '{"inputUri": "%s", "framesPerJob": 1e9}' % good, "InvalidInput"),  # noqa: UP031
        ("fpj-1e9-text", {"inputUri": good, "framesPerJob": "1e9"}, "InvalidInput"),
        ("fpj-fraction", {"inputUri": good, "framesPerJob": 2.5}, "InvalidInput"),
        ("frame-word", {"inputUri": good, "frameStart": "one"}, "InvalidInput"),
        ("input-other-bucket", {"inputUri": "s3://someone-elses-bucket/cas/x.blend"}, "InputOutsideBucket"),
        (
            "output-other-bucket",
            {"inputUri": good, "outputUri": "s3://someone-elses-bucket/jobs/x"},
            "InputOutsideBucket",
        ),
        ("manifest-other-bucket", {"manifestUri": "s3://someone-elses-bucket/m.json"}, "InputOutsideBucket"),
        ("input-not-s3", {"inputUri": "https://example.com/x.blend"}, "InvalidInput"),
        ("input-missing", {"inputUri": f"s3://{bucket}/cas/sha256/{'0' * 64}"}, "InputNotFound"),
        ("no-input", {"jobName": "nothing to render"}, "InvalidInput"),
        ("foreign-job-definition", {"inputUri": good, "jobDefinitionArn": "arn:aws:batch:x"}, "InvalidInput"),
        ("scene-missing", {"inputUri": good, "scene": "NoSuchScene"}, "SceneNotFound"),
        ("no-camera", {"inputUri": uri["nocamera"]}, "NoCamera"),
    ]


@pytest.mark.slow
def test_every_bad_execution_input_ends_in_its_named_error(
    drill_cloud: LocalCloudProcess, scenes: dict[str, Path]
) -> None:
    cases = _case_inputs(drill_cloud, scenes)
    before = bucket_keys(drill_cloud)
    started = {}
    for tag, execution_input, expected in cases:
        job_id = new_job_id(tag)
        started[job_id] = (tag, expected, start_execution(drill_cloud, job_id, execution_input))
    results = {job_id: wait_execution(drill_cloud, arn) for job_id, (_, _, arn) in started.items()}
    got = {started[job_id][0]: (described["status"], described.get("error")) for job_id, described in results.items()}
    assert got == {tag: ("FAILED", expected) for tag, _, expected in cases}
    for described in results.values():
        assert described.get("cause"), "every failure says why"
    new = bucket_keys(drill_cloud) - before
    assert not foreign_keys(new, set(started)), foreign_keys(new, set(started))
    assert not [key for key in new if key.startswith("jobs/")], "a refused job must leave no plan behind"
    print(f"\n{len(cases)} bad execution inputs, each refused with its named error")


@pytest.mark.parametrize("execution_input", ["[1, 2, 3]", '"a string"', "42"])
def test_an_input_that_is_not_an_object_is_invalid_input(drill_cloud: LocalCloudProcess, execution_input: str) -> None:
    described = wait_execution(drill_cloud, start_execution(drill_cloud, new_job_id("notobject"), execution_input))
    assert (described["status"], described.get("error")) == ("FAILED", "InvalidInput")


def test_an_execution_input_over_256_kb_is_refused_like_aws(drill_cloud: LocalCloudProcess) -> None:
    padding = "x" * (SFN_INPUT_LIMIT + 1 - len('{"inputUri": "s3://b/k", "pad": ""}'))
    body = json.dumps({"inputUri": f"s3://{drill_cloud.bucket}/k", "pad": padding})
    assert len(body.encode()) == SFN_INPUT_LIMIT + 1 - len("s3://b/k") + len(f"s3://{drill_cloud.bucket}/k")
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        start_execution(drill_cloud, new_job_id("huge"), body)
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "Member must have length less than or equal to 262144" in error["Message"]
    # At the limit StartExecution accepts it. The first state wraps the input ({"input": ..., "jobId": ...}): AWS
    # may refuse that payload (States.DataLimitExceeded); moto passes it to the frame counter, which names the
    # missing .blend. Either way the execution fails with a name. Real clients send a few hundred bytes.
    exact = json.dumps({"inputUri": f"s3://{drill_cloud.bucket}/k", "pad": ""})
    exact = exact.replace('"pad": ""', '"pad": "' + "x" * (SFN_INPUT_LIMIT - len(exact.encode())) + '"')
    assert len(exact.encode()) == SFN_INPUT_LIMIT
    described = wait_execution(drill_cloud, start_execution(drill_cloud, new_job_id("limit"), exact))
    assert described["status"] == "FAILED"
    assert described["error"] in ("States.DataLimitExceeded", "InputNotFound")


@pytest.mark.slow
def test_more_than_10000_chunks_raises_frames_per_job(drill_cloud: LocalCloudProcess, scenes: dict[str, Path]) -> None:
    """10,001 frames at 1 frame per job would need 10,001 array children (Batch allows 10,000): the plan raises
    frames per job to 2 (5,001 chunks). Rendering 10,001 frames here would take hours, so the drill stops once
    the array job exists, which is the step AWS would have refused."""
    job_id = new_job_id("10k")
    arn = start_execution(
        drill_cloud,
        job_id,
        {"inputUri": put_cas(drill_cloud, scenes["two"].read_bytes()), "frameEnd": 10_001, "framesPerJob": 1},
    )
    try:
        batch = drill_cloud.client("batch")
        # Wait for the children to run before asking Batch anything: moto's DescribeJobs/ListJobs iterate the job table
        # while SubmitJob is still adding 5,001 children to it, and fail ("dictionary changed size during iteration").
        running = wait_for(lambda: workers(drill_cloud, job_id), timeout=180, interval=0.5)
        assert running, wait_execution(drill_cloud, arn, timeout=1)
        job = {"jobId": running[0].batch_job.split(":")[0]}
        plan = json.loads(
            drill_cloud.client("s3").get_object(Bucket=drill_cloud.bucket, Key=f"jobs/{job_id}/job.json")["Body"].read()
        )
        assert plan["frames_per_job_raised"] is True and plan["frames_per_job"] == 2
        assert len(plan["chunks"]) == 5001 and sum(len(c) for c in plan["chunks"]) == 10_001
        described = batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0]
        assert described["jobName"] == f"render-{job_id}"
        assert 2 <= described["arrayProperties"]["size"] == 5001 <= 10_000

        drill_cloud.client("stepfunctions").stop_execution(executionArn=arn, error="JobCancelled", cause="drill")
        assert wait_execution(drill_cloud, arn)["status"] == "ABORTED"
        # The array job and every one of its 5,001 children are terminated, queued ones included.
        parent = wait_for(
            lambda: (d := batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0])["status"] == "FAILED" and d, timeout=120
        )
        assert parent, "the array job was not terminated"
        children = batch.describe_jobs(jobs=[f"{job['jobId']}:0", f"{job['jobId']}:5000"])["jobs"]
        assert [(c["status"], c["statusReason"]) for c in children] == [("FAILED", "Execution was stopped")] * 2
        assert wait_for(lambda: not workers(drill_cloud, job_id), timeout=60), "children kept running after the stop"
    finally:  # a failed assertion must not leave 5,001 chunks rendering for the rest of the suite
        drill_cloud.client("stepfunctions").stop_execution(executionArn=arn, error="JobCancelled", cause="drill")


def _run_clis(cloud: LocalCloudProcess, runs: dict[str, list[str]], cwd: Path) -> dict[str, Any]:
    """Runs several real CLI commands at once (independent jobs), returns their completed processes."""
    env = {**cloud.client_environment(), "RENDER_ON_AWS_CACHE_DIR": str(cwd / "cache")}
    processes = {
        tag: subprocess.Popen(
            cloud.cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        for tag, args in runs.items()
    }
    results = {}
    for tag, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        results[tag] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


@pytest.mark.slow
def test_the_cli_names_each_bad_input(drill_cloud: LocalCloudProcess, scenes: dict[str, Path], tmp_path: Path) -> None:
    s = {name: str(path) for name, path in scenes.items()}
    cases: dict[str, tuple[list[str], str]] = {
        "truncated": (["submit", s["truncated"]], "BlendFileUnreadable"),
        "empty": (["submit", s["empty"]], "BlendFileUnreadable"),
        "notblend": (["submit", s["notblend"]], "BlendFileUnreadable"),
        "end-before-start": (["submit", s["two"], "--frames", "5-2", "--wait"], "NoFramesToRender"),
        "fpj-0": (["submit", s["two"], "--frames-per-job", "0"], "InvalidInput"),
        "fpj-minus-1": (["submit", s["two"], "--frames-per-job", "-1"], "InvalidInput"),
        "fpj-abc": (["submit", s["two"], "--frames-per-job", "abc"], "InvalidInput"),
        "fpj-1e9": (["submit", s["two"], "--frames-per-job", "1e9"], "InvalidInput"),
        "fpj-10^9": (["submit", s["two"], "--frames-per-job", "1000000000", "--wait"], "InvalidInput"),
        "no-camera": (["submit", s["nocamera"], "--wait"], "NoCamera"),
        "scene-missing": (["submit", s["two"], "--scene", "NoSuchScene", "--wait"], "SceneNotFound"),
        "missing-texture": (["submit", s["textured"]], "MissingDependencies"),
    }
    before = bucket_keys(drill_cloud)
    results = _run_clis(drill_cloud, {tag: args for tag, (args, _) in cases.items()}, tmp_path)
    got = {tag: last_line(result.stderr).split(":", 1)[0] for tag, result in results.items()}
    assert got == {tag: expected for tag, (_, expected) in cases.items()}, {
        tag: result.stderr[-600:] for tag, result in results.items()
    }
    assert all(result.returncode != 0 for result in results.values())
    assert all("Traceback" not in result.stderr for result in results.values())
    assert "missing: " in results["missing-texture"].stderr and "wood.png" in results["missing-texture"].stderr
    job_ids = {result.stdout.split()[0] for result in results.values() if result.stdout.strip()}
    new = bucket_keys(drill_cloud) - before
    assert not foreign_keys(new, job_ids), foreign_keys(new, job_ids)
    submitted = {tag for tag, result in results.items() if result.stdout.strip()}
    assert submitted == {"end-before-start", "fpj-10^9", "no-camera", "scene-missing"}, "refused before any upload"


def test_the_cli_names_a_corrupt_file(drill_cloud: LocalCloudProcess, scenes: dict[str, Path], tmp_path: Path) -> None:
    result = _run_clis(drill_cloud, {"corrupt": ["submit", str(scenes["corrupt"])]}, tmp_path)["corrupt"]
    assert last_line(result.stderr).startswith("BlendFileUnreadable: "), result.stderr[-400:]


@pytest.mark.slow
def test_odd_job_names_and_unknown_fields_succeed_inside_their_prefix(
    drill_cloud: LocalCloudProcess, scenes: dict[str, Path], tmp_path: Path
) -> None:
    """One-frame jobs (a plain Batch job, not an array) with hostile names, and an input with fields the frame
    counter does not know (documented choice: ignored and logged, for forward compatibility)."""
    names = {
        "dotdot": "../../../etc/passwd",
        "slash": "a/b/c",
        "newline": "line one\nline two\r\n",
        "1kb": "k" * 1024,
        "emoji": "🎬 render ✨",
    }
    before = bucket_keys(drill_cloud)
    unknown_id = new_job_id("unknown")
    unknown_arn = start_execution(
        drill_cloud,
        unknown_id,
        {
            "inputUri": put_cas(drill_cloud, scenes["one"].read_bytes()),
            "priority": "urgent",
            "outputBucket": "someone-elses-bucket",
            "nested": {"deep": [1, 2, 3]},
        },
    )
    results = _run_clis(
        drill_cloud,
        {tag: ["submit", str(scenes["one"]), "--job-name", name, "--wait"] for tag, name in names.items()},
        tmp_path,
    )
    for tag, result in results.items():
        assert result.returncode == 0, (tag, result.stderr[-800:])
    job_ids = {tag: result.stdout.split()[0] for tag, result in results.items()}
    unknown = wait_execution(drill_cloud, unknown_arn)
    assert unknown["status"] == "SUCCEEDED", unknown
    new = bucket_keys(drill_cloud) - before
    assert not foreign_keys(new, {*job_ids.values(), unknown_id}), foreign_keys(new, {*job_ids.values(), unknown_id})
    for tag, job_id in job_ids.items():
        keys = sorted(key for key in new if key.startswith(f"jobs/{job_id}/"))
        videos = [key for key in keys if key.endswith(".mp4")]
        assert len(videos) == 1 and videos[0].count("/") == 2, (tag, keys)
        assert all(c.isascii() and (c.isalnum() or c in "._-/") for c in videos[0]), videos[0]
        assert f"jobs/{job_id}/frames/000001.png" in keys
        output = json.loads(wait_execution(drill_cloud, execution_arn(drill_cloud, job_id))["output"])
        assert output["chunkCount"] == 1 and output["frames"]["count"] == 1
        assert "\n" not in output["jobName"] and len(output["jobName"]) <= 128
    unknown_output = json.loads(unknown["output"])
    assert unknown_output["videoUri"].startswith(f"s3://{drill_cloud.bucket}/jobs/{unknown_id}/")
