"""The seed's way against ours on the same frames: wall time of one fresh process per frame (Blender start, .blend
download and file load every frame, as the seed's array of one-frame jobs did) divided by one process for the
whole chunk (started, downloaded and loaded once, frames rendered back to back).

Both sides run the real worker command line against a moto S3 server over HTTP, on the demo scene
(scripts/demo_scene.py: 320x180, Cycles 8 samples), one after the other in one run. Prints ``ratio: X.XX``
last. No assertion: this is a measurement.
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
from frame_overhead import ROOT, free_port, plan_for, run_worker
from moto.server import ThreadedMotoServer
from render_on_aws.core import layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames of the demo scene (its default is 48)")
    args = parser.parse_args()

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            blend = Path(tmp) / "demo.blend"
            subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "demo_scene.py"), str(blend), "--frame-end", str(args.frames)],
                check=True,
                capture_output=True,
            )
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
    finally:
        server.stop()

    print(f"frames: {args.frames} (demo scene, 320x180, Cycles 8 samples)")
    print(f"seed's way, a process per frame: {seed_wall:.2f} s ({seed_wall / args.frames:.2f} s a frame)")
    print(f"ours, one process for the chunk: {ours_wall:.2f} s ({ours_wall / args.frames:.2f} s a frame)")
    print(f"ratio: {seed_wall / ours_wall:.2f}")


if __name__ == "__main__":
    main()
