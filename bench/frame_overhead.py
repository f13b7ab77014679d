"""Per-frame overhead of the worker (fetch, S3 listing, upload, bookkeeping) relative to pure render time.

Side by side in one run, on the demo scene (scripts/demo_scene.py defaults: 320x180, Cycles 8 samples):
  A. pure: a process that imports bpy, opens the local .blend and renders the frames to local disk;
  B. ours: the worker's `render` action for one chunk of the same frames, against a moto S3 server over HTTP
     (download the .blend, list the frames prefix, render, upload each frame from a background thread).
The figure, ``ratio: X.XX`` (target <= 0.05), comes from the worker's own accounting of its chunk (its
``chunk N timing`` line): the time its main thread spends outside Blender's render and file-load calls (S3
listings, the .blend download, queueing uploads, waiting for the last ones, checks), divided by the time inside
the render calls. Per-chunk costs that any Blender process pays (Python start, bpy import, file load) are not
per-frame overhead; bench/seed_vs_chunked.py measures those. The side-by-side wall times of A and B are printed
too, but on a small shared machine they move by more than the overhead itself. Each side runs twice,
alternating; the faster run of each counts. No assertion: this is a measurement.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from common import ROOT, make_demo_scene, moto_s3
from render_contract import layout
from render_contract.plan import Plan, chunk, frame_numbers

PURE = """
import sys, time, bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1], load_ui=False)
scene = bpy.data.scenes["Scene"]
scene.render.use_persistent_data = True  # the worker's setting: a render setting, not overhead
total = 0.0
for frame in range(1, int(sys.argv[3]) + 1):
    scene.frame_set(frame)
    scene.render.filepath = f"{sys.argv[2]}/{frame:06d}"
    t = time.perf_counter()
    bpy.ops.render.render(write_still=True, scene=scene.name)
    total += time.perf_counter() - t
print(f"PURE_RENDER_S {total:.6f}", file=sys.stderr)
"""


def plan_for(bucket: str, job_id: str, input_uri: str, frames: int, frames_per_job: int) -> Plan:
    chunks, used, raised = chunk(frame_numbers(1, frames, 1), frames_per_job)
    return Plan(
        job_id=job_id,
        job_name=job_id,
        scene="Scene",
        frame_start=1,
        frame_end=frames,
        frame_step=1,
        fps_num=24,
        fps_den=1,
        engine="CYCLES",
        resolution_x=320,
        resolution_y=180,
        resolution_percentage=100,
        file_format="PNG",
        frame_extension="png",
        has_camera=True,
        blender_version="5.0.1",
        input_uri=input_uri,
        main_file="demo.blend",
        output_uri=f"s3://{bucket}/jobs/{job_id}",
        video_key=layout.video_key(job_id, job_id),
        frames_per_job=used,
        frames_per_job_raised=raised,
        chunks=chunks,
    )


def run_worker(plan: Plan, index: int = 0) -> tuple[float, dict[str, float]]:
    """Wall time of one worker process (the job definition's command line), and its own timing line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}
    command = [sys.executable, "-m", "render_worker.cli", "render", "-i", plan.input_uri, "-o", plan.output_uri]
    started = time.perf_counter()
    result = subprocess.run([*command, "-f", str(plan.frames_per_job)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"worker failed ({result.returncode}):\n{result.stderr[-3000:]}")
    timing = next(line for line in result.stderr.splitlines() if line.startswith(f"chunk {index} timing:"))
    fields = dict(item.split("=") for item in timing.split(":", 1)[1].split())
    return wall, {name: float(value) for name, value in fields.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames of the demo scene (its default is 48)")
    args = parser.parse_args()

    with moto_s3(), tempfile.TemporaryDirectory() as tmp:
        blend = make_demo_scene(Path(tmp) / "demo.blend", "--frame-end", str(args.frames))
        s3 = boto3.client("s3")
        bucket = "bench-frame-overhead"
        s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(blend), bucket, "uploads/demo.blend")
        input_uri = f"s3://{bucket}/uploads/demo.blend"

        pure_walls, pure_renders, worker_walls, timings = [], [], [], []
        for attempt in range(2):
            out = Path(tmp) / f"pure-{attempt}"
            out.mkdir()
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", PURE, str(blend), str(out), str(args.frames)],
                capture_output=True,
                text=True,
                check=True,
            )
            pure_walls.append(time.perf_counter() - started)
            pure_renders.append(float(result.stderr.split("PURE_RENDER_S ")[1].split()[0]))

            plan = plan_for(bucket, f"overhead-{attempt}", input_uri, args.frames, args.frames)
            s3.put_object(Bucket=bucket, Key=layout.plan_key(plan.job_id), Body=plan.to_json())
            wall, timing = run_worker(plan)
            worker_walls.append(wall)
            timings.append(timing)

    pure_wall, pure_render, worker_wall = min(pure_walls), min(pure_renders), min(worker_walls)
    best = min(timings, key=lambda t: t["total_s"])
    outside = best["total_s"] - best["render_s"] - best["open_s"]
    print(f"frames: {args.frames} (demo scene, 320x180, Cycles 8 samples)")
    print(f"A pure process:   wall {pure_wall:.2f} s, rendering {pure_render:.2f} s")
    print(f"B worker process: wall {worker_wall:.2f} s (difference {worker_wall - pure_wall:+.2f} s, noisy)")
    print(
        f"B's chunk: render {best['render_s']:.2f} s, file load {best['open_s']:.2f} s, "
        f"fetch {best['fetch_s']:.3f} s, listings {best['list_s']:.3f} s, "
        f"waiting for uploads {best['upload_wait_s']:.3f} s, total {best['total_s']:.2f} s"
    )
    print(f"overhead: {outside:.3f} s in all, {1000 * outside / args.frames:.1f} ms per frame")
    print(f"ratio: {outside / best['render_s']:.2f}")


if __name__ == "__main__":
    main()
