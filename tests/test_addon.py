"""The Blender extension with real bpy against the embedded local cloud.

Each scenario runs in its own process of the venv's Python (bpy is global state): it enables the add-on (the
built zip through Blender's extension installer, or the repository's folder for speed), points the preferences
at the session's local cloud, opens a real .blend, presses the operators and drives :func:`runtime.tick` (what
the timer runs: timers do not fire without a window) until the job ends. Results come back as one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from render_contract import ids as contract_ids
from render_contract.runtimes import RUNTIMES, parse_version
from render_on_aws.core import history, jobref
from render_on_aws.core.budget import CallBudget, max_calls_per_window
from render_on_aws.core.connection import Connection, ConnectionSettings

from localcloud import runtimes as local_runtimes
from localcloud.process import LocalCloudProcess
from tests.conftest import ROOT, make_scene, run_cli

TINY = ("--frame-end", "6", "--resolution", "64", "36", "--engine", "workbench")

DUMMY_ACCESS_KEY = "AKIARENDERONAWSDUMMY1"
DUMMY_SECRET_KEY = "dummySecretKeyRenderOnAws0123456789abcdef"

PRELUDE = r"""
import json, os, sys, time
from pathlib import Path
import bpy, addon_utils

def install():
    if os.environ.get("ROA_ZIP"):
        bpy.ops.extensions.package_install_files(
            filepath=os.environ["ROA_ZIP"], repo="user_default", enable_on_install=True)
        return "bl_ext.user_default.render_on_aws"
    addon_utils.enable("render_on_aws", default_set=True, handle_error=None)
    return "render_on_aws"

PKG = install()
runtime = sys.modules[PKG + ".runtime"]
from render_contract.phases import FINISHED_PHASES, Phase
prefs = bpy.context.preferences.addons[PKG].preferences

def use_local(stack=None):
    prefs.connection_kind = "LOCAL"
    prefs.endpoint = os.environ["ROA_ENDPOINT"]
    prefs.stack = stack or os.environ["ROA_STACK"]

def open_blend(path, output=None):
    bpy.ops.wm.open_mainfile(filepath=str(path))
    if output:
        bpy.context.scene.render.filepath = str(output) + "/"

def job():
    return bpy.context.scene.render_on_aws.active_job

def view():
    return runtime.VIEWS.get(job().key)

def drive(until, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runtime.tick()
        if until():
            return
        time.sleep(0.05)
    raise TimeoutError(f"still {view()}")

def finished():
    return not runtime.active(job().key) and job().state in FINISHED_PHASES

def result(**values):
    print("RESULT " + json.dumps(values), flush=True)
"""


def run_blender(
    script: str,
    cloud: LocalCloudProcess,
    tmp_path: Path,
    *,
    zip_path: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    python: Path | None = None,
) -> dict:
    """Runs PRELUDE + script in a fresh bpy process (``python``: another Blender series's runtime); returns its
    RESULT object."""
    config = tmp_path / "aws-empty"
    config.write_text("")
    user = tmp_path / "blender-user"
    environment = {
        **cloud.client_environment(),
        "BLENDER_USER_RESOURCES": str(user),
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(config),
        "ROA_ENDPOINT": cloud.endpoint,
        "ROA_STACK": cloud.stack,
        "ROA_ZIP": str(zip_path) if zip_path else "",
        **(env or {}),
    }
    process = subprocess.run(
        [str(python or sys.executable), "-c", PRELUDE + script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=tmp_path,
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, f"exit {process.returncode}\n{process.stdout}\n{process.stderr}"
    assert "Traceback" not in process.stderr, process.stderr
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="session")
def addon_zip() -> Path:
    """The extension zip as ``make addon`` builds it (wheels cached under build/wheels after the first build)."""
    subprocess.run([sys.executable, str(ROOT / "build_addon.py")], check=True, capture_output=True, cwd=ROOT)
    zips = sorted((ROOT / "dist").glob("render_on_aws-*.zip"))
    assert zips
    return zips[-1]


# ---- bpy-free parts --------------------------------------------------------------------------------------
def test_call_budget_keeps_twelve_calls_a_minute() -> None:
    now = [0.0]
    budget = CallBudget(limit=12, window=60.0, clock=lambda: now[0])
    for _ in range(100):  # a poller that polls (2 calls) and sometimes fetches a preview (1 call)
        needed = 3 if int(now[0]) % 30 == 0 else 2
        now[0] += max(10.0, budget.delay(needed))
        budget.spend(needed)
    assert max_calls_per_window(budget.log) <= 12
    assert max_calls_per_window([0, 1, 2, 61, 62]) == 3


def test_usage_counts_every_batch_attempt(local_cloud: LocalCloudProcess, tiny_scene: Path) -> None:
    done = run_cli(local_cloud, "submit", str(tiny_scene), "--wait")
    assert done.returncode == 0, done.stderr
    connection = Connection(ConnectionSettings(stack=local_cloud.stack, endpoint=local_cloud.endpoint))
    job = jobref.JobRef.from_id(connection, done.stdout.split()[0])
    ids = history.batch_job_ids(connection, job)
    assert len(ids) == 2  # the render (array or single) job and the stitch job
    used = history.usage(connection, job)
    assert len(used.attempts) >= 2 and used.vcpu_hours > 0
    assert "vCPU-hours" in used.describe(with_cost=False) and "$" not in used.describe(with_cost=False)
    assert "estimate $" in used.describe(with_cost=True)


# ---- the real extension ------------------------------------------------------------------------------------
SUBMIT_TO_VIDEO = r"""
blend, out = Path(sys.argv[1]), Path(sys.argv[2])
use_local()
open_blend(blend, out)
bpy.ops.wm.save_mainfile()
before = (bpy.data.filepath, bpy.data.is_dirty, blend.read_bytes())
bpy.context.scene.render.filepath = str(out) + "/"  # a change not saved: is_dirty must stay as it is
dirty = bpy.data.is_dirty
bpy.ops.render.aws_submit()
after = (bpy.data.filepath, bpy.data.is_dirty, blend.read_bytes())
phases = []
def seen():
    v = view()
    if v and (not phases or phases[-1] != v.phase):
        phases.append(v.phase)
    return finished()
drive(seen)
item = job()
notices = list(view().runtime_notices)
bpy.ops.render.aws_open_video()
video_scene = bpy.data.scenes[-1]
editor = video_scene.sequence_editor
strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # `sequences` before 4.4
bpy.ops.wm.save_mainfile()
bpy.ops.wm.save_userpref()
registered = all(hasattr(bpy.types, name) for name in ("RENDER_PT_aws", "RENDER_OT_aws_submit"))
values = dict(
    state=item.state, error=item.error, cause=item.cause, job_id=item.job_id, arn=item.execution_arn,
    video=item.video_path, frames_dir=item.frames_dir, usage=item.usage, phases=phases,
    same_path=before[0] == after[0], file_unchanged=before[2] == after[2], dirty_kept=dirty == after[1],
    strip_frames=strips[0].frame_final_duration if len(strips) else 0,
    preview=bool(bpy.data.images.get(runtime.PREVIEW_IMAGE)), registered=registered,
    addon_dir=str(Path(sys.modules[PKG].__file__).parent),
    blender=item.blender, notices=notices, version=bpy.app.version_string,
)
addon_utils.disable(PKG, default_set=True, handle_error=None)
result(unregistered=not hasattr(bpy.types, "RENDER_PT_aws"), **values)
"""


@pytest.mark.parametrize("series", sorted(RUNTIMES, key=parse_version))
def test_zip_install_submit_to_video_without_secrets(
    local_cloud: LocalCloudProcess, tmp_path: Path, addon_zip: Path, series: str
) -> None:
    """In every Blender series the farm has (its runtime's own Python): the zip installs, enables and submits,
    and the farm renders with that series (the add-on sends ``bpy.app.version``; the copy it saves is that
    series's file)."""
    python = local_runtimes.python_for(series)
    tiny_scene = make_scene(tmp_path / "tiny.blend", *TINY, python=python)
    out = tmp_path / "out"
    secrets = {"AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY}
    got = _run_with_args(SUBMIT_TO_VIDEO, local_cloud, tmp_path, [tiny_scene, out], addon_zip, secrets, python)
    assert got["state"] == "done", got
    assert got["version"].startswith(RUNTIMES[series]), got["version"]
    assert (got["blender"], got["notices"]) == (RUNTIMES[series], []), got
    assert got["registered"] and got["unregistered"]
    assert "bl_ext" in got["addon_dir"] or "extensions" in got["addon_dir"], got["addon_dir"]
    assert got["same_path"] and got["file_unchanged"] and got["dirty_kept"]
    assert {"uploading", "rendering", "done"} <= set(got["phases"]), got["phases"]
    video = Path(got["video"])
    assert video.is_file() and video.suffix == ".mp4" and video.parent == out / got["job_id"]
    assert len(list(Path(got["frames_dir"]).glob("*.png"))) == 6
    assert got["strip_frames"] == 6 and got["preview"]
    assert "vCPU-hours" in got["usage"] and "$" not in got["usage"]  # no cost estimate on the local cloud
    # Nothing secret written anywhere: the saved .blend, the installed add-on, the preferences.
    candidates = [tiny_scene, tmp_path / "blender-user" / "config" / "userpref.blend"]
    candidates += [path for path in Path(got["addon_dir"]).rglob("*") if path.is_file()]
    assert (tmp_path / "blender-user" / "config" / "userpref.blend").is_file()
    for path in candidates:
        data = path.read_bytes()
        assert DUMMY_ACCESS_KEY.encode() not in data and DUMMY_SECRET_KEY.encode() not in data, path
    assert got["arn"].encode() in tiny_scene.read_bytes()  # what reattaching needs is in the file


def _run_with_args(
    script: str,
    cloud: LocalCloudProcess,
    tmp_path: Path,
    args: list,
    zip_path: Path | None = None,
    env=None,
    python: Path | None = None,
) -> dict:
    preamble = f"sys.argv[1:] = {[str(arg) for arg in args]!r}\n"
    return run_blender(preamble + script, cloud, tmp_path, zip_path=zip_path, env=env, python=python)


CANCEL = r"""
use_local()
open_blend(sys.argv[1], sys.argv[2])
bpy.context.scene.render_on_aws.frames_per_job_auto = False
bpy.context.scene.render_on_aws.frames_per_job = 10
bpy.ops.wm.save_mainfile()
bpy.ops.render.aws_submit()
drive(lambda: view() is not None and view().phase == "rendering" and view().frames_done >= 1)
bpy.ops.render.aws_cancel()
drive(finished)
cancelled = dict(state=job().state, arn=job().execution_arn, error=job().error, usage=job().usage)
bpy.ops.render.aws_resume(key=job().key)
drive(finished)
result(**cancelled, resumed=job().state, resumed_arn=job().execution_arn, video=job().video_path,
       jobs=len(bpy.context.scene.render_on_aws.jobs))
"""


def test_cancel_while_rendering_stops_the_batch_jobs(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    blend = make_scene(
        tmp_path / "long.blend", "--frame-end", "60", "--resolution", "64", "36", "--engine", "workbench"
    )
    got = _run_with_args(CANCEL, local_cloud, tmp_path, [blend, tmp_path / "out"])
    assert got["state"] == "cancelled" and got["error"] == "JobCancelled", got
    sfn, batch = local_cloud.client("stepfunctions"), local_cloud.client("batch")
    assert sfn.describe_execution(executionArn=got["arn"])["status"] == "ABORTED"
    connection = Connection(ConnectionSettings(stack=local_cloud.stack, endpoint=local_cloud.endpoint))
    job = jobref.JobRef(contract_ids.job_id_of(got["arn"]), got["arn"], local_cloud.bucket)
    ids = history.batch_job_ids(connection, job)
    assert ids
    deadline = time.monotonic() + 60  # termination is SIGTERM, then SIGKILL after a grace period
    while True:
        described = batch.describe_jobs(jobs=ids)["jobs"]
        children = [
            f"{d['jobId']}:{i}" for d in described for i in range((d.get("arrayProperties") or {}).get("size", 0))
        ]
        described += batch.describe_jobs(jobs=children)["jobs"] if children else []
        running = [d["jobId"] for d in described if d["status"] in ("RUNNING", "STARTING", "RUNNABLE")]
        if not running or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not running, running
    # Resume: the same entry in the panel's list runs again as <jobId>--r2 and brings the video back.
    assert (got["resumed"], got["jobs"]) == ("done", 1), got
    assert got["resumed_arn"] == got["arn"] + "--r2" and Path(got["video"]).is_file()


REATTACH_SUBMIT = r"""
use_local()
open_blend(sys.argv[1], sys.argv[2])
bpy.ops.wm.save_mainfile()
bpy.ops.render.aws_submit()
drive(lambda: job().execution_arn != "")
bpy.ops.wm.save_mainfile()
result(arn=job().execution_arn, state=job().state)
"""

REATTACH_OPEN = r"""
use_local()
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])  # load_post reattaches
attached = runtime.active(job().key)
drive(finished)
result(attached=attached, state=job().state, video=job().video_path)
"""


def test_reopening_the_file_reattaches(local_cloud: LocalCloudProcess, tiny_scene: Path, tmp_path: Path) -> None:
    first = _run_with_args(REATTACH_SUBMIT, local_cloud, tmp_path, [tiny_scene, tmp_path / "out"])
    assert first["arn"] and first["state"] not in ("done", "failed"), first
    second = _run_with_args(REATTACH_OPEN, local_cloud, tmp_path, [tiny_scene])
    assert second["attached"] and second["state"] == "done", second
    assert Path(second["video"]).is_file()


UNSAVED = r"""
use_local()
try:
    bpy.ops.render.aws_submit()
    message = ""
except RuntimeError as error:
    message = str(error)
result(message=message, jobs=len(bpy.context.scene.render_on_aws.jobs))
"""


def test_unsaved_file_gets_a_clear_error(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    got = run_blender(UNSAVED, local_cloud, tmp_path)
    assert "Save the file first" in got["message"] and got["jobs"] == 0


WRONG_STACK = r"""
use_local(stack="no-such-stack")
open_blend(sys.argv[1], sys.argv[2])
bpy.ops.render.aws_submit()
drive(finished)
thread = runtime.test_connection(prefs.connection_settings())
thread.join(60)
drive(lambda: runtime.CONNECTION_MESSAGE.ok is not None)
result(state=job().state, error=job().error, cause=job().cause, test=runtime.CONNECTION_MESSAGE.text)
"""


def test_wrong_stack_name_reads_plainly(local_cloud: LocalCloudProcess, tiny_scene: Path, tmp_path: Path) -> None:
    got = _run_with_args(WRONG_STACK, local_cloud, tmp_path, [tiny_scene, tmp_path / "out"])
    assert got["state"] == "failed" and got["error"] == "StackNotFound", got
    assert "no-such-stack" in got["cause"] and got["test"].startswith("StackNotFound: ")


NO_CREDENTIALS = r"""
prefs.connection_kind = "AWS"
prefs.region = "us-east-1"
prefs.profile = ""
thread = runtime.test_connection(prefs.connection_settings())
thread.join(120)
drive(lambda: runtime.CONNECTION_MESSAGE.ok is not None)
result(ok=runtime.CONNECTION_MESSAGE.ok, text=runtime.CONNECTION_MESSAGE.text)
"""


def test_missing_credentials_read_plainly(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    got = run_blender(NO_CREDENTIALS, local_cloud, tmp_path)
    assert got["ok"] is False and got["text"].startswith("ConnectionFailed: "), got
    assert "credentials" in got["text"]


MISSING_FILES = r"""
use_local()
open_blend(sys.argv[1], sys.argv[2])
image = bpy.data.images.new("lost", 4, 4)
image.source = "FILE"
image.filepath = "//textures/lost.png"
material = bpy.data.materials[0]
node = material.node_tree.nodes.new("ShaderNodeTexImage")
node.image = image
bpy.ops.wm.save_mainfile()
bpy.ops.render.aws_submit()
drive(lambda: view() is not None and view().phase in {Phase.MISSING_FILES, *FINISHED_PHASES})
missing = list(view().missing)
bpy.ops.render.aws_missing_decision(submit_anyway=False)
drive(finished)
result(missing=missing, state=job().state, arn=job().execution_arn)
"""


def test_missing_files_stop_before_any_upload(local_cloud: LocalCloudProcess, tiny_scene: Path, tmp_path: Path) -> None:
    got = _run_with_args(MISSING_FILES, local_cloud, tmp_path, [tiny_scene, tmp_path / "out"])
    assert any("lost.png" in line for line in got["missing"]), got
    assert got["state"] == "stopped" and got["arn"] == ""


INTO_OUTPUT_PATH = r"""
use_local()
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
scene.render.filepath = "//renders/shot_##"
scene.render_on_aws.download_to_output_path = True
bpy.ops.wm.save_mainfile()
bpy.ops.render.aws_submit()
said = []
def until_done():
    if view() is not None and view().deliveries and not said:
        said.extend(view().deliveries)
    return finished()
drive(until_done)
result(state=job().state, said=said, frames_dir=job().frames_dir, output_root=job().output_root)
"""


def test_the_panel_downloads_into_the_output_path_and_says_what_comes_back(
    local_cloud: LocalCloudProcess, tmp_path: Path
) -> None:
    """The panel's checkbox: frames land where F12 Render Animation writes them; the job says so before."""
    blend = make_scene(tmp_path / "shot" / "shot.blend", "--frame-end", "2", "--resolution", "32", "18")
    got = _run_with_args(INTO_OUTPUT_PATH, local_cloud, tmp_path, [blend])
    assert got["state"] == "done", got
    renders = blend.parent / "renders"
    assert got["said"][0] == f"frames: 2 x PNG 8-bit RGBA, named shot_01.png ... shot_02.png, into {renders}/", got
    assert sorted(path.name for path in renders.glob("*.png")) == ["shot_01.png", "shot_02.png"]
    assert Path(got["frames_dir"]) == renders and got["output_root"] == str(blend.parent)
