"""The contract package: one path rule, one manifest, one execution input, one id scheme, one vocabulary."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from render_contract import errors, exitcodes, ids, layout, paths
from render_contract.errors import InputOutsideBucket, InvalidInput, NoFramesToRender
from render_contract.execution_input import ExecutionInput, parse
from render_contract.manifest import Manifest
from render_contract.phases import FINISHED_PHASES, Phase
from render_contract.plan import frame_range

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "a" * 64
BUCKET = "render-bucket"


@pytest.mark.parametrize(
    "bad",
    [
        "/etc/passwd",
        "../x.png",
        "a/../../x.png",
        "..",
        "C:/x.png",
        "a\\b.png",
        "a//b.png",
        "./a.png",
        "tex/./a.png",
        "a/\x07.png",
        "new\nline.png",
        "bidi\u202e.png",
        "",
        "./",
        "x" * 256,
        "a/" * 600 + "b",
    ],
)
def test_tree_paths_the_farm_would_refuse_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        paths.check_tree_path(bad)


@pytest.mark.parametrize("good", ["main.blend", "textures/wood.png", "_outside_project/C/tex/a b.png", "été/ü.png"])
def test_ordinary_tree_paths_pass(good: str) -> None:
    assert paths.check_tree_path(good) == good


def test_a_file_cannot_also_be_a_folder() -> None:
    with pytest.raises(InvalidInput, match="needs it to be a folder"):
        paths.check_tree(["tex", "tex/a.png"])
    assert paths.check_tree(["tex/b.png", "tex/a.png", "texture.png"]) == ["tex/a.png", "tex/b.png", "texture.png"]


def test_manifest_round_trip_and_refusals() -> None:
    manifest = Manifest("shot.blend", {"shot.blend": DIGEST, "tex/a.png": "b" * 64})
    again = Manifest.parse(manifest.to_json())
    assert again == manifest and again.main_digest == DIGEST
    assert again.cas_keys() == {f"cas/sha256/{DIGEST}", f"cas/sha256/{'b' * 64}"}
    bad_documents = [
        b"not json",
        json.dumps({"version": 2, "main": "a.blend", "files": {"a.blend": DIGEST}}),
        json.dumps({"version": 1, "main": "b.blend", "files": {"a.blend": DIGEST}}),
        json.dumps({"version": 1, "main": "a.blend", "files": {"a.blend": "xyz"}}),
        json.dumps({"version": 1, "main": "a.blend", "files": {"a.blend": DIGEST, "../x": DIGEST}}),
        json.dumps({"version": 1, "main": "a.blend", "files": {"a.blend": DIGEST, "tex": DIGEST, "tex/a": DIGEST}}),
        json.dumps({"version": 1, "main": "a.blend", "files": {}}),
        json.dumps([1, 2]),
    ]
    for document in bad_documents:
        with pytest.raises(InvalidInput):
            Manifest.parse(document)


def test_the_seeds_payload_is_accepted() -> None:
    seed = {
        "jobName": "Pottery",
        "inputUri": f"s3://{BUCKET}/input/pottery.blend",
        "outputUri": f"s3://{BUCKET}/output",
        "framesPerJob": "1",
        "jobDefinitionArn": "arn:def",
        "jobQueueArn": "arn:queue",
    }
    parsed = parse(seed, BUCKET, frozenset({"arn:def"}), frozenset({"arn:queue"}))
    assert parsed.source == layout.S3Uri(BUCKET, "input/pottery.blend")
    assert (parsed.job_name, parsed.frames_per_job, parsed.frame_start) == ("Pottery", 1, None)


def test_the_clients_input_parses_back_to_itself() -> None:
    sent = ExecutionInput.for_job(BUCKET, "shot-20261204-101010-abcdef", job_name="Shot", frame_start=3, frame_end=9)
    wire = json.loads(json.dumps(sent.to_dict()))
    assert wire["framesPerJob"] == "auto" and "inputUri" not in wire
    assert parse(wire, BUCKET) == sent


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([], InvalidInput),
        ({}, InvalidInput),
        ({"inputUri": "s3://elsewhere/a.blend"}, InputOutsideBucket),
        ({"inputUri": f"s3://{BUCKET}/folder/"}, InvalidInput),
        ({"inputUri": f"s3://{BUCKET}/a.blend", "frameStart": True}, InvalidInput),
        ({"inputUri": f"s3://{BUCKET}/a.blend", "frameStart": "1.5"}, InvalidInput),
        ({"inputUri": f"s3://{BUCKET}/a.blend", "framesPerJob": 0}, InvalidInput),
        ({"inputUri": f"s3://{BUCKET}/a.blend", "jobQueueArn": "arn:other"}, InvalidInput),
        ({"inputUri": f"s3://{BUCKET}/a.blend", "scene": ""}, InvalidInput),
    ],
)
def test_bad_inputs_get_their_names(data: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse(data, BUCKET)


def test_unknown_fields_are_reported_not_fatal() -> None:
    parsed = parse({"inputUri": f"s3://{BUCKET}/a.blend", "futureField": 1, "frameEnd": "12"}, BUCKET)
    assert parsed.unknown_fields == ("futureField",) and parsed.frame_end == 12


def test_frame_range_limits() -> None:
    assert frame_range(1, 7, 3) == [1, 4, 7]
    for start, end, step in ((5, 1, 1), (1, 5, 0), (0, 2_000_000, 1)):
        with pytest.raises(NoFramesToRender):
            frame_range(start, end, step)


def test_job_ids_and_execution_arns_round_trip() -> None:
    job_id = ids.new_job_id("Shot 010 / été", now=datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    assert job_id.startswith("Shot_010_ete-20261204-100000-") and ids.check_job_id(job_id) == job_id
    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:render"
    arn = ids.execution_arn(machine, job_id)
    assert arn == f"arn:aws:states:eu-west-1:123456789012:execution:render:{job_id}"
    assert ids.job_id_of(arn) == job_id
    assert layout.job_id_from_output(layout.job_prefix(job_id)) == job_id
    for bad in ("", "a" * 81, "-x", "a/b", "a:b"):
        with pytest.raises(InvalidInput):
            ids.check_job_id(bad)
    with pytest.raises(InvalidInput):
        ids.job_id_of(machine)
    with pytest.raises(InvalidInput):
        ids.execution_arn("arn:aws:lambda:eu-west-1:1:function:f", job_id)


def test_every_error_has_a_meaning_and_a_known_exit_code() -> None:
    assert {"NoCamera", "MissingFrames", "CancelFailed", "JobCancelled", "Interrupted"} <= set(errors.ERRORS)
    for name, cls in errors.ERRORS.items():
        assert cls.__doc__ and cls.__doc__.strip(), name
        assert cls.exit_code in (exitcodes.EXIT_FAILED, *exitcodes.RETRIED_EXIT_CODES), name
        if cls.exit_code in exitcodes.RETRIED_EXIT_CODES:
            assert cls.retryable, name
    rebuilt = errors.from_name("NoCamera", "no camera", frame=3)
    assert isinstance(rebuilt, errors.NoCamera) and rebuilt.frame == 3
    assert errors.from_name("FromTheFuture", "x").name == "FromTheFuture"


def test_phases_are_spelled_once() -> None:
    assert Phase.COUNTING_FRAMES == "counting frames" and Phase.DONE in FINISHED_PHASES
    assert Phase.RENDERING not in FINISHED_PHASES


def _state_machine_error_names() -> tuple[set[str], list[dict]]:
    definition = json.loads((ROOT / "statemachine" / "render.asl.json").read_text())
    states = definition["States"]
    names: set[str] = set()
    for state in states.values():
        if state["Type"] == "Fail" and "Error" in state:
            names.add(state["Error"])
        for clause in (*state.get("Retry", []), *state.get("Catch", [])):
            names.update(clause["ErrorEquals"])
    fails = [state for state in states.values() if state["Type"] == "Fail"]
    return names, fails


def test_the_state_machine_names_only_errors_of_the_vocabulary() -> None:
    names, fails = _state_machine_error_names()
    service_errors = {name for name in names if name.startswith(("States.", "Lambda.", "Batch."))}
    assert names - service_errors <= set(errors.ERRORS)
    # No Fail state hard-codes a generic name: each reports the error the Lambda (or the worker, through the
    # explain step) raised.
    assert fails and all("ErrorPath" in state and "Error" not in state for state in fails)


def test_the_contract_imports_nothing_outside_the_standard_library() -> None:
    import ast
    import sys

    package = ROOT / "contract" / "render_contract"
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= set(sys.stdlib_module_names) | {"__future__"}, (module.name, roots)


def test_an_artists_job_ids_start_with_the_tag_and_fit_an_execution_name() -> None:
    job_id = ids.new_job_id("A very long shot name " * 5, artist="A" * 32)
    assert job_id.startswith("A" * 32 + "-") and len(job_id) <= ids.JOB_ID_LIMIT and ids.check_job_id(job_id)
    for bad in ("ann-b", "ann/b", "x" * 33, "ünï"):
        with pytest.raises(InvalidInput):
            ids.new_job_id("shot", artist=bad)


def test_a_resumed_run_is_named_after_its_job() -> None:
    job_id = ids.new_job_id("shot", artist="alice")
    assert ids.execution_name(job_id) == job_id and ids.split_execution_name(job_id) == (job_id, 1)
    for run in (2, 17, ids.MAX_RUNS):
        name = ids.execution_name(job_id, run)
        assert name == f"{job_id}--r{run}" and len(name) <= ids.JOB_ID_LIMIT
        assert ids.split_execution_name(name) == (job_id, run)
        machine = "arn:aws:states:us-east-1:1:stateMachine:m"
        assert ids.execution_of(ids.execution_arn(machine, job_id, run)) == (job_id, run)
    assert ids.split_execution_name("take--r1") == ("take--r1", 1)  # run 1 is never spelled with a suffix
    for bad in (0, 1 + ids.MAX_RUNS):
        with pytest.raises(InvalidInput):
            ids.execution_name(job_id, bad)


def test_scripts_run_only_by_the_jobs_consent() -> None:
    blend = {"inputUri": f"s3://{BUCKET}/a.blend"}
    assert parse(blend, BUCKET).allow_scripts is False
    for value in (True, "true", "TRUE"):
        assert parse({**blend, "allowScripts": value}, BUCKET).allow_scripts is True
    for value in (1, "yes", [], {}):
        with pytest.raises(InvalidInput):
            parse({**blend, "allowScripts": value}, BUCKET)
    sent = ExecutionInput.for_job(BUCKET, "job-1", allow_scripts=True)
    assert sent.to_dict()["allowScripts"] is True and parse(sent.to_dict(), BUCKET) == sent
    assert "allowScripts" not in ExecutionInput.for_job(BUCKET, "job-1").to_dict()
