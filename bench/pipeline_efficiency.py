"""Pipeline efficiency: full local pipeline wall time / direct bpy render of the same frames, same parallelism.

The pipeline is timed from ``render-on-aws submit --wait --download`` to the MP4 on disk (upload, Lambda,
Batch array on the local cloud's workers, stitch, download). The reference renders the same frames with
plain bpy in as many processes as the cloud has workers, each opening the file once and rendering its
contiguous share: the render-only limit. Runs alternate, medians are compared; the ratio is printed last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import make_demo_scene

from localcloud import process as localcloud
from localcloud.batch import slot_cpus

DIRECT_RENDER = """
import sys, bpy
path, out, first, last, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
bpy.ops.wm.open_mainfile(filepath=path)
scene = bpy.context.scene
scene.render.threads_mode = "FIXED"
scene.render.threads = threads
for frame in range(first, last + 1):
    scene.frame_set(frame)
    scene.render.filepath = f"{out}/{frame:06d}.png"
    bpy.ops.render.render(write_still=True)
"""


def direct_render(scene: Path, frames: int, workers: int, threads: int, out: Path) -> float:
    share = -(-frames // workers)
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                DIRECT_RENDER,
                str(scene),
                str(out),
                str(first),
                str(min(frames, first + share - 1)),
                str(threads),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # The same cores per process as the local cloud gives each worker slot (localcloud/batch.py).
            preexec_fn=(lambda cpus=cpus: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        for first, cpus in zip(range(1, frames + 1, share), slot_cpus(workers) or [None] * workers, strict=False)
    ]
    for process in processes:
        if process.wait() != 0:
            raise RuntimeError("direct render failed")
    return time.perf_counter() - started


def pipeline(cloud: localcloud.LocalCloudProcess, scene: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        cloud.cli_command("submit", str(scene), "--wait", "--download", str(out)),
        check=True,
        capture_output=True,
        env=cloud.client_environment(),
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples: make demo's scene uses 32")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as temp:
        work = Path(temp)
        scene = work / "demo.blend"
        make_demo_scene(scene, "--frame-end", str(args.frames), "--samples", str(args.samples))
        cloud = localcloud.start(work / "cloud", workers=args.workers)
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        pipeline_times, direct_times = [], []
        try:
            for run in range(args.runs):
                direct_times.append(direct_render(scene, args.frames, args.workers, threads, work / f"direct-{run}"))
                pipeline_times.append(pipeline(cloud, scene, work / f"out-{run}"))
                print(f"run {run + 1}: pipeline {pipeline_times[-1]:.2f} s, direct bpy {direct_times[-1]:.2f} s")
        finally:
            cloud.stop()
    print(f"frames: {args.frames}, workers: {args.workers}, threads per worker: {threads}")
    print(f"median pipeline: {statistics.median(pipeline_times):.2f} s")
    print(f"median direct render: {statistics.median(direct_times):.2f} s")
    print(f"ratio: {statistics.median(pipeline_times) / statistics.median(direct_times):.2f}")


if __name__ == "__main__":
    main()
