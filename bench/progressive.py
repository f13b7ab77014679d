"""Progressive order (issue 17.5), measured on the local cloud with the demo scene and the real CLI.

1. Span ratio: ``render-on-aws submit --wait`` of the demo scene; afterwards every frame object's LastModified
   (S3 listing of ``jobs/<jobId>/frames/``) gives when each frame was done. The shot is "spanned" at the first
   moment at least ceil(n/8) frames are done and no run of missing frames (in the planned range) is longer than
   twice the spacing n/done. Ratio = (that moment - origin) / (last frame done - origin), target <= 0.2. Origin:
   the start of rendering = the earliest frame's LastModified minus the median per-frame render time (the
   workers' "frame N: render S s" lines); the same ratio from the execution's startDate (which also counts upload,
   the Lambda, worker start and file load) is printed beside it. LastModified has one-second resolution.
2. Resume after a cancel at half-way: a new job; once about half its frames are in S3, ``render-on-aws cancel``,
   wait until its worker processes are gone, ``render-on-aws resume JOB --wait``; the "rendered frame N" lines of
   the job's worker logs over both runs give frames rendered again = sum(count - 1), target 0; the resume must
   upload nothing (the cas/ keys unchanged).

Side figure: the old consecutive chunking vs the new coarse-to-fine order, simulated from the measured per-frame
render times (workers take chunks in index order and render each chunk's frames in list order, as the farm does).
Exits non-zero when a run failed.

    python bench/progressive.py --frames 48 --samples 32 --workers 2
"""

from __future__ import annotations

import argparse
import heapq
import importlib
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from render_contract import ids, layout
from render_contract.plan import auto_frames_per_job, chunk

from localcloud import process as localcloud

# bench/common.py (on the path when run as bench/progressive.py) puts the repository root on sys.path.
make_demo_scene: Any = importlib.import_module("common").make_demo_scene
psutil: Any = importlib.import_module("psutil")
RENDERED = re.compile(r"^rendered frame (-?\d+)$", re.MULTILINE)
RENDER_TIME = re.compile(r"frame (-?\d+): render ([0-9.]+) s")


class BenchFailed(Exception):
    pass


# ---- the span measure (shared by the measured run and the simulation) ---------------------------------------
def span_moment(frames: list[int], done: list[tuple[float, int]]) -> float:
    """The first time in ``done`` (sorted (time, frame)) at which the done frames span the shot."""
    index = {f: i for i, f in enumerate(frames)}
    total = len(frames)
    have = [False] * total
    for count, (t, frame) in enumerate(done, 1):
        if frame in index:
            have[index[frame]] = True
        if count < math.ceil(total / 8):
            continue
        best = run = 0
        for present in have:
            run = 0 if present else run + 1
            best = max(best, run)
        if best <= 2 * total / count:
            return t
    return done[-1][0]


def ratio(frames: list[int], done: list[tuple[float, int]], origin: float) -> float:
    return (span_moment(frames, done) - origin) / (done[-1][0] - origin)


def old_chunk(frames: list[int], frames_per_job: int) -> list[list[int]]:
    return [frames[i : i + frames_per_job] for i in range(0, len(frames), frames_per_job)]


def finish_times(chunks: list[list[int]], workers: int, seconds: dict[int, float]) -> list[tuple[float, int]]:
    free = [(0.0, w) for w in range(workers)]
    done: list[tuple[float, int]] = []
    for frames in chunks:
        t, w = heapq.heappop(free)
        for frame in frames:
            t += seconds[frame]
            done.append((t, frame))
        heapq.heappush(free, (t, w))
    return sorted(done)


# ---- the local cloud ----------------------------------------------------------------------------------------
def cli(cloud: localcloud.LocalCloudProcess, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cloud.cli_command(*args), capture_output=True, text=True, timeout=1800, env=cloud.client_environment()
    )
    if result.returncode != 0:
        raise BenchFailed(f"render-on-aws {' '.join(args[:1])} failed ({result.returncode}):\n{result.stderr}")
    return result


def frame_objects(cloud: localcloud.LocalCloudProcess, job_id: str) -> dict[int, datetime]:
    paginator = cloud.client("s3").get_paginator("list_objects_v2")
    found = {}
    for page in paginator.paginate(Bucket=cloud.bucket, Prefix=layout.frames_prefix(job_id)):
        for item in page.get("Contents", []):
            if (frame := layout.frame_from_key(item["Key"])) is not None:
                found[frame] = item["LastModified"]
    return found


def keys(cloud: localcloud.LocalCloudProcess, prefix: str) -> set[str]:
    paginator = cloud.client("s3").get_paginator("list_objects_v2")
    return {
        item["Key"]
        for page in paginator.paginate(Bucket=cloud.bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    }


def job_logs(cloud: localcloud.LocalCloudProcess, job_id: str) -> list[str]:
    """Every render attempt's log of ``job_id`` (both runs of a resumed job), as tests/reliability/support.py."""
    logs = []
    for path in sorted(cloud.state_dir.glob("batch/*/attempt-*.log")):
        text = path.read_text(errors="replace")
        first = text.split("\n", 1)[0]
        if "render-worker render:" in first and f"/jobs/{job_id} " in first + " ":
            logs.append(text)
    return logs


def job_workers(cloud: localcloud.LocalCloudProcess, job_id: str) -> list[Any]:
    found = []
    for child in psutil.Process(cloud.process.pid).children(recursive=True):
        try:
            line = " ".join(child.cmdline())
            if child.status() != psutil.STATUS_ZOMBIE and "render_worker.cli" in line and f"/jobs/{job_id}" in line:
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise BenchFailed(f"timed out waiting for {what}")
        time.sleep(interval)
    return value


# ---- the two measurements -----------------------------------------------------------------------------------
def measure_span(cloud: localcloud.LocalCloudProcess, scene: Path, frames: list[int], workers: int) -> None:
    started = time.perf_counter()
    job_id = cli(cloud, "submit", str(scene), "--wait").stdout.split()[0]
    wall = time.perf_counter() - started
    done_at = frame_objects(cloud, job_id)
    if sorted(done_at) != frames:
        raise BenchFailed(f"job {job_id}: {len(done_at)} frames in S3, {len(frames)} planned")
    execution = cloud.client("stepfunctions").describe_execution(
        executionArn=ids.execution_arn(cloud.outputs["StateMachineArn"], job_id)
    )
    seconds = {int(f): float(s) for text in job_logs(cloud, job_id) for f, s in RENDER_TIME.findall(text)}
    if set(seconds) != set(frames):
        raise BenchFailed(f"job {job_id}: render times logged for {len(seconds)} of {len(frames)} frames")
    frame_s = statistics.median(seconds.values())
    zero = execution["startDate"]
    done = sorted(((at - zero).total_seconds(), frame) for frame, at in done_at.items())
    render_start = done[0][0] - frame_s
    print(f"job {job_id}: {len(frames)} frames, {workers} workers; submit --wait {wall:.1f} s (context)")
    print(
        f"  median frame render {frame_s:.2f} s; last frame done {done[-1][0] - render_start:.1f} s after rendering"
        f" began, {done[-1][0]:.1f} s after the execution started (context; LastModified resolution 1 s)"
    )
    span_from_render = ratio(frames, done, render_start)
    print(
        f"span ratio (first eighth spans the shot / render time), origin = earliest frame done - one median frame:"
        f" {span_from_render:.3f}  (target <= 0.2)"
    )
    print(f"span ratio, origin = execution startDate: {ratio(frames, done, 0.0):.3f}  (context)")

    fpj = auto_frames_per_job(len(frames), workers)
    new, _, _ = chunk(frames, fpj)
    slots = min(workers, math.ceil(len(frames) / fpj))
    r_old = ratio(frames, finish_times(old_chunk(frames, fpj), slots, seconds), 0.0)
    r_new = ratio(frames, finish_times(new, slots, seconds), 0.0)
    print(f"side figure, simulated from the measured frame times: old chunking {r_old:.3f}  new order {r_new:.3f}")


def measure_resume(cloud: localcloud.LocalCloudProcess, scene: Path, frames: list[int]) -> None:
    cas_before_job = keys(cloud, "cas/")
    job_id = cli(cloud, "submit", str(scene)).stdout.split()[0]
    half = len(frames) // 2
    wait_until(lambda: len(frame_objects(cloud, job_id)) >= half, 1800, "half the frames")
    cli(cloud, "cancel", job_id)
    wait_until(lambda: not job_workers(cloud, job_id), 120, "the cancelled workers to exit")
    before = frame_objects(cloud, job_id)
    cas_before = keys(cloud, "cas/")
    resumed = cli(cloud, "resume", job_id, "--wait")
    after = frame_objects(cloud, job_id)
    cas_after = keys(cloud, "cas/")
    counts = Counter(int(f) for text in job_logs(cloud, job_id) for f in RENDERED.findall(text))
    again = sum(count - 1 for count in counts.values() if count > 1)
    run = "(run 2)" in resumed.stderr
    print(f"job {job_id}: cancelled at {len(before)}/{len(frames)} frames done (asked at >= {half})")
    print(f"  after resume: {len(after)}/{len(frames)} frames done; resumed as run 2: {'yes' if run else 'NO'}")
    print(
        f"  frames rendered over both runs: {len(counts)} distinct, {sum(counts.values())} renders;"
        f" never rendered: {len(set(frames) - set(counts))}"
    )
    uploaded = len(cas_after - cas_before)
    print(
        f"  uploads by the resume (new cas/ keys): {uploaded}; by the submit: {len(cas_before - cas_before_job)}"
        f" (0 when the scene's bytes were already stored)"
    )
    print(f"frames rendered again after the resume: {again}  (target 0)")
    if sorted(after) != frames or not run or set(counts) != set(frames):
        raise BenchFailed(f"job {job_id}: the resumed job is incomplete")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="demo scene frames (the demo's default: 48)")
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples (make demo's scene uses 32)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    frames = list(range(1, args.frames + 1))
    with tempfile.TemporaryDirectory(prefix="bench-progressive-") as temp:
        work = Path(temp)
        scene = make_demo_scene(work / "demo.blend", "--frame-end", str(args.frames), "--samples", str(args.samples))
        print(f"demo scene: 320x180, frames 1-{args.frames}, Cycles {args.samples} samples; local cloud")
        cloud = localcloud.start(work / "cloud", workers=args.workers)
        try:
            measure_span(cloud, scene, frames, args.workers)
            measure_resume(cloud, scene, frames)
        except BenchFailed as error:
            print(f"FAILED: {error}", file=sys.stderr)
            return 1
        finally:
            cloud.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
