"""Peak memory of the frame counter on a >= 1 GiB .blend: it must stay flat in the file size (target <= 256 MiB).

Makes a valid Blender 5.0 file with bpy (the tiny demo scene plus a packed, incompressible 1 GiB "image", so the
file cannot be read cheaply by accident), uploads it to an in-process moto S3 server, runs the real handler in a
child process and prints that child's peak resident set size (its ``VmHWM``, kept by the kernel). The last line
is ``peak_rss_mib: N``. A baseline child that only imports the handler is printed too, so the cost of the file
itself is visible. Everything lives in a temporary directory that is deleted at the end.

Run: ``.venv/bin/python bench/frame_counter_memory.py [--size-mib 1100]``
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from common import free_port, make_demo_scene

ROOT = Path(__file__).resolve().parent.parent
FRAME_COUNTER = ROOT / "lambda" / "frame_counter"
MIB = 1024 * 1024
BUCKET = "frame-counter-bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

PACK_SCRIPT = """
import sys
import bpy
scene_path, payload_path, out_path = sys.argv[1:4]
bpy.ops.wm.open_mainfile(filepath=scene_path)
image = bpy.data.images.load(payload_path, check_existing=False)
image.pack()  # the bytes go into the .blend as they are: one big, incompressible block
image.use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=out_path, compress=False)
"""

CHILD_SCRIPT = """
import json, sys
sys.path.insert(0, {frame_counter!r})
import app
if sys.argv[1] == "run":
    summary = app.handler({{"input": {{"inputUri": sys.argv[2], "jobName": "memory bench"}}, "jobId": "bench-1"}}, None)
    print(json.dumps({{"frames": summary["frames"]["count"], "scene": summary["scene"]}}))
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""
"""The child reports its own VmHWM: the peak RSS of its address space since exec. (``ru_maxrss`` would not do: Linux
carries the forked parent's high-water mark over exec, and the parent here holds the moto server and its data.)"""


def make_big_blend(folder: Path, size_mib: int) -> Path:
    """A tiny demo scene with ``size_mib`` of random bytes packed into it; bpy runs in processes of its own."""
    scene = folder / "scene.blend"
    make_demo_scene(scene, "--frame-end", "250")
    payload = folder / "payload.bin"
    with payload.open("wb") as sink:
        for _ in range(size_mib // 64):
            sink.write(os.urandom(64 * MIB))
        sink.write(os.urandom((size_mib % 64) * MIB))
    out = folder / "big.blend"
    subprocess.run(
        [sys.executable, "-c", PACK_SCRIPT, str(scene), str(payload), str(out)], check=True, capture_output=True
    )
    payload.unlink()
    return out


def run_child(mode: str, uri: str, env: dict[str, str]) -> tuple[int, str]:
    """Runs the handler (or only its imports) in a child; returns (its peak RSS in KiB, its result line)."""
    code = textwrap.dedent(CHILD_SCRIPT.format(frame_counter=str(FRAME_COUNTER)))
    completed = subprocess.run(
        [sys.executable, "-c", code, mode, uri], env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"the {mode} child failed with {completed.returncode}: {completed.stderr[-2000:]}")
    lines = completed.stdout.strip().splitlines()
    return int(lines[-1]), lines[-2] if len(lines) > 1 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1100, help="packed payload size (default 1100: > 1 GiB)")
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per ranged GET otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "BUCKET_NAME": BUCKET}
    env.pop("AWS_PROFILE", None)
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
    try:
        with tempfile.TemporaryDirectory(prefix="frame-counter-bench-") as tmp:
            started = time.monotonic()
            blend = make_big_blend(Path(tmp), args.size_mib)
            size = blend.stat().st_size
            print(f"file: {size / MIB:.0f} MiB ({size} bytes), made in {time.monotonic() - started:.0f} s")
            s3 = boto3.client("s3", endpoint_url=endpoint)
            s3.create_bucket(Bucket=BUCKET)
            started = time.monotonic()
            s3.upload_file(str(blend), BUCKET, "uploads/big.blend", Config=TransferConfig(max_concurrency=4))
            blend.unlink()
            print(f"uploaded to moto in {time.monotonic() - started:.0f} s")
            uri = f"s3://{BUCKET}/uploads/big.blend"
            baseline, _ = run_child("import", uri, env)
            started = time.monotonic()
            peak, result = run_child("run", uri, env)
            print(f"handler ran in {time.monotonic() - started:.0f} s")
            print(f"handler result: {result}")
            print(f"baseline_rss_mib (imports only): {baseline / 1024:.0f}")
            print(f"file_size_mib: {size / MIB:.0f}")
            print(f"peak_rss_mib: {peak / 1024:.0f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
