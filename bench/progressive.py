"""Progressive order (issue 17): time until the first eighth of the frames spans the shot, over the whole render.

"Spans" means at least an eighth of the frames is done and every run of missing frames is at most twice the
spacing (total / done). Printed as a ratio (target <= 0.2), old consecutive chunking vs the new coarse-to-fine
order, from per-frame render times: measured ones (``--frame-times times.json``, {frame: seconds}, e.g. from the
workers' "frame N: render S s" log lines of a demo-scene run) or, without them, uniform times with +-30% jitter.
Workers take chunks in index order and render each chunk's frames in list order, as the farm does.

    python bench/progressive.py --frames 48 --workers 2
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
from pathlib import Path

from render_contract.plan import auto_frames_per_job, chunk


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


def span_ratio(frames: list[int], done: list[tuple[float, int]]) -> float:
    index = {f: i for i, f in enumerate(frames)}
    total = len(frames)
    have = [False] * total
    for count, (t, frame) in enumerate(done, 1):
        have[index[frame]] = True
        if count * 8 < total:
            continue
        best = run = 0
        for present in have:
            run = 0 if present else run + 1
            best = max(best, run)
        if best <= 2 * total / count:
            return t / done[-1][0]
    return 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames-per-job", type=int, help="default: the auto rule (one chunk per worker)")
    parser.add_argument("--frame-times", type=Path, help="JSON {frame: seconds} measured on the demo scene")
    args = parser.parse_args()
    frames = list(range(1, args.frames + 1))
    if args.frame_times:
        seconds = {int(k): float(v) for k, v in json.loads(args.frame_times.read_text()).items()}
        frames = sorted(seconds)
    else:
        rng = random.Random(17)
        seconds = {f: rng.uniform(0.7, 1.3) for f in frames}
    fpj = args.frames_per_job or auto_frames_per_job(len(frames), args.workers)
    new, _, _ = chunk(frames, fpj)
    old = old_chunk(frames, fpj)
    workers = min(args.workers, math.ceil(len(frames) / fpj))
    r_old = span_ratio(frames, finish_times(old, workers, seconds))
    r_new = span_ratio(frames, finish_times(new, workers, seconds))
    print(f"{len(frames)} frames, {len(new)} chunks, {workers} workers")
    print(f"time to span the shot / render time: old {r_old:.3f}  new {r_new:.3f}  (target <= 0.2)")


if __name__ == "__main__":
    main()
