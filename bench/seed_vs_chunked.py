"""The seed's way against ours on the same frames: wall time of one fresh process per frame (Blender start, .blend
download and file load every frame, as the seed's array of one-frame jobs did) divided by one process for the
whole chunk (started, downloaded and loaded once, frames rendered back to back).

Both sides run the real worker command line against a moto S3 server over HTTP, on the demo scene
(scripts/demo_scene.py: 320x180, Cycles 8 samples), one after the other in one run. Prints ``ratio: X.XX``
last. No assertion: this is a measurement.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import boto3
from common import make_demo_scene, moto_s3
from frame_overhead import plan_for, run_worker
from render_contract import layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames of the demo scene (its default is 48)")
    args = parser.parse_args()

    with moto_s3(), tempfile.TemporaryDirectory() as tmp:
        blend = make_demo_scene(Path(tmp) / "demo.blend", "--frame-end", str(args.frames))
        s3 = boto3.client("s3")
        bucket = "bench-seed-vs-chunked"
        s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(blend), bucket, "uploads/demo.blend")
        input_uri = f"s3://{bucket}/uploads/demo.blend"

        seed = plan_for(bucket, "seed-way", input_uri, args.frames, 1)
        ours = plan_for(bucket, "chunked", input_uri, args.frames, args.frames)
        for plan in (seed, ours):
            s3.put_object(Bucket=bucket, Key=layout.plan_key(plan.job_id), Body=plan.to_json())

        started = time.perf_counter()
        for index in range(len(seed.chunks)):
            run_worker(seed, index)
        seed_wall = time.perf_counter() - started

        started = time.perf_counter()
        run_worker(ours, 0)
        ours_wall = time.perf_counter() - started

    print(f"frames: {args.frames} (demo scene, 320x180, Cycles 8 samples)")
    print(f"seed's way, a process per frame: {seed_wall:.2f} s ({seed_wall / args.frames:.2f} s a frame)")
    print(f"ours, one process for the chunk: {ours_wall:.2f} s ({ours_wall / args.frames:.2f} s a frame)")
    print(f"ratio: {seed_wall / ours_wall:.2f}")


if __name__ == "__main__":
    main()
