"""Does Blender stay responsive while a job uploads 200 MB and is followed? And how many AWS calls a minute?

Runs bpy in a subprocess with the add-on enabled, against the embedded local cloud. The main thread does what
Blender's timer loop does: call the add-on's timer function (``runtime.tick``) every 10 ms, and measures the gap
between iterations; the longest gap minus 10 ms is the stall the artist would feel. Meanwhile the add-on's own
background machinery hashes and uploads a scene with a 200 MB texture, then polls the job at the AWS interval
(10 s, at most 12 calls in any minute, preview downloads included) although the endpoint is local.

Prints ``max_stall_ms: N`` (target <= 50) and ``calls_per_min: N`` (the busiest 60 s of the rendering period,
target <= 12) last. Nothing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXTURE_MB = 200

CHILD = r"""
import json, os, sys, time
from pathlib import Path
import bpy, addon_utils

addon_utils.enable("render_on_aws", default_set=True, handle_error=None)
from render_on_aws import runtime
from render_on_aws.core import budget, following, tasks

aws_like = tasks.default_options
def aws_interval_options(settings, output_dir, preview_dir, work_dir=None):
    # The AWS polling policy (10 s, 12 calls a minute, up to 2 flipbook previews a poll) against the local endpoint.
    options = aws_like(settings, output_dir, preview_dir, work_dir)
    options.interval, options.budget = following.AWS_POLL_SECONDS, budget.CallBudget()
    options.preview_every = tasks.AWS_PREVIEW_SECONDS
    options.previews_per_poll = tasks.AWS_PREVIEWS_PER_POLL
    return options
tasks.default_options = aws_interval_options

blend, texture, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
bpy.ops.wm.open_mainfile(filepath=str(blend))
prefs = bpy.context.preferences.addons["render_on_aws"].preferences
prefs.connection_kind, prefs.endpoint, prefs.stack = "LOCAL", os.environ["ROA_ENDPOINT"], os.environ["ROA_STACK"]
scene = bpy.context.scene
image = bpy.data.images.new("big", 4, 4)
image.source, image.filepath = "FILE", bpy.path.relpath(str(texture))
material = bpy.data.materials[0]
material.node_tree.nodes.new("ShaderNodeTexImage").image = image
scene.render.filepath = str(out) + "/"
scene.render_on_aws.frames_per_job_auto = False
scene.render_on_aws.frames_per_job = int(os.environ["ROA_FRAMES_PER_JOB"])
bpy.ops.wm.save_mainfile()

PERIOD = 0.010
def idle_stall(seconds):
    # The same loop with no job: what the machine itself costs the main thread (scheduling, other processes).
    worst, last, end = 0.0, time.perf_counter(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        time.sleep(PERIOD)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
        runtime.tick()
    return worst
baseline = idle_stall(5.0)

clicked = time.perf_counter()
bpy.ops.render.aws_submit()
click_ms = (time.perf_counter() - clicked) * 1000
item = scene.render_on_aws.active_job
task = runtime.TASKS[item.key]

gaps = {}
all_gaps = []
render_from = render_to = None
if os.environ.get("ROA_SWITCH_INTERVAL"):
    sys.setswitchinterval(float(os.environ["ROA_SWITCH_INTERVAL"]))
last = time.perf_counter()
while runtime.active(item.key):
    time.sleep(PERIOD)
    now = time.perf_counter()
    gap, last = now - last, now  # between iteration starts: the tick's own time, the sleep, any GIL wait
    runtime.tick()
    view = runtime.VIEWS.get(item.key)
    phase = view.phase if view else "?"
    gaps[phase] = max(gaps.get(phase, 0.0), gap)
    all_gaps.append(gap)
    if phase == "rendering" and render_from is None:
        render_from = time.monotonic()
    if phase != "rendering" and render_from is not None and render_to is None:
        render_to = time.monotonic()

runtime.tick()
call_budget = task.options.budget
render_to = render_to or time.monotonic()
rendering = [t for t in call_budget.log if render_from is not None and render_from <= t <= render_to]
print("CHILD " + json.dumps({
    "state": item.state, "error": item.error, "cause": item.cause,
    "click_ms": click_ms,
    "baseline_stall_ms": round(max(0.0, baseline - PERIOD) * 1000, 1),
    "p99_stall_ms": round(max(0.0, sorted(all_gaps)[int(len(all_gaps) * 0.99)] - PERIOD) * 1000, 1),
    "stall_ms_by_phase": {k: round(max(0.0, v - PERIOD) * 1000, 1) for k, v in gaps.items()},
    "rendering_s": (render_to - render_from) if render_from else 0.0,
    "rendering_calls": len(rendering),
    "calls_per_min": budget.max_calls_per_window(rendering),
    "previews_fetched": len(task.previews_fetched),
    "watcher_calls": task.watcher.calls if task.watcher else 0,
    "preview_calls": task.preview_calls,
}), flush=True)
"""


def main() -> int:
    from common import make_demo_scene

    from localcloud.process import start

    with tempfile.TemporaryDirectory(prefix="ui_stall_") as folder:
        work = Path(folder)
        cloud = start(work / "cloud", workers=2, niceness=19)  # the farm is not on the artist's desk
        try:
            blend = make_demo_scene(
                work / "scene" / "stall.blend",
                # 64 samples: over a minute of rendering, so the calls are counted over a whole minute.
                *("--frame-end", "48", "--resolution", "320", "180", "--engine", "cycles", "--samples", "64"),
            )
            texture = work / "scene" / "textures" / "noise.png"
            texture.parent.mkdir(parents=True, exist_ok=True)
            with open(texture, "wb") as handle:
                for _ in range(TEXTURE_MB):
                    handle.write(os.urandom(1 << 20))
            env = {
                **cloud.client_environment(),
                "ROA_ENDPOINT": cloud.endpoint,
                "ROA_STACK": cloud.stack,
                "ROA_FRAMES_PER_JOB": "24",
                "ROA_SWITCH_INTERVAL": os.environ.get("ROA_SWITCH_INTERVAL", ""),
                "BLENDER_USER_RESOURCES": str(work / "blender-user"),
                "PYTHONPATH": str(ROOT),
            }
            child = subprocess.run(
                [sys.executable, "-c", CHILD, str(blend), str(texture), str(work / "out")],
                capture_output=True,
                text=True,
                env=env,
                timeout=1800,
            )
        finally:
            cloud.stop()
    lines = [line for line in child.stdout.splitlines() if line.startswith("CHILD ")]
    if child.returncode != 0 or not lines:
        print(child.stdout[-4000:], child.stderr[-4000:], file=sys.stderr)
        return 1
    got = json.loads(lines[-1][len("CHILD ") :])
    print(f"job: {got['state']} {got['error']} {got['cause']}".rstrip())
    print(f"upload: {TEXTURE_MB} MB texture + the .blend; submit click (saving the copy): {got['click_ms']:.0f} ms")
    print("longest main-thread stall by phase (ms):", json.dumps(got["stall_ms_by_phase"]))
    print(f"same loop without a job, before submitting (the machine's own noise): {got['baseline_stall_ms']} ms")
    print(f"99th percentile of the gaps during the job: {got['p99_stall_ms']} ms")
    print(
        f"rendering period: {got['rendering_s']:.0f} s, {got['rendering_calls']} AWS calls "
        f"(JobWatcher {got['watcher_calls']} in all, previews {got['preview_calls']})"
    )
    print(f"max_stall_ms: {max(got['stall_ms_by_phase'].values()):.0f}")
    print(f"calls_per_min: {got['calls_per_min']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
