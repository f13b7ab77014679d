"""Resubmitting an unchanged project uploads (almost) nothing; a changed texture uploads only itself.

A project of >= 200 MB is made: a .blend (made with bpy) whose materials use incompressible textures (PNG files of
random pixels, stored uncompressed, written directly: 16 of 8 MiB and one 80 MiB plate, which goes up in multipart).
It is submitted with the real client code (``prepare`` + ``submit_prepared``: BAT packing, hash cache,
HEADs, transfer-manager uploads, manifest) to the embedded local cloud, three times: cold, unchanged, one texture
changed. Each execution is stopped right after it starts: only the upload is measured, and rendering 200 MB of
textures would only slow the bench down (the cloud is real so the stack discovery, the bucket and StartExecution are
those of a real submission). Bytes uploaded = the transfer manager's byte count plus the manifest's size.

Hashing throughput is the project size / ``prepare()`` wall time, with an empty hash cache (files just written, so
in the OS page cache: this is SHA-256 speed, not disk speed) and with a warm cache (a ``stat`` per file).
Files are older than the cache's racy window (2 s) before the first submission, as an artist's textures are.
Prints ``ratio: X.XXX`` (second-submission bytes / project size, target <= 0.01) last.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from render_on_aws.core import hashcache, preparing, starting  # noqa: E402
from render_on_aws.core.connection import Connection, ConnectionSettings  # noqa: E402

from localcloud import process as localcloud  # noqa: E402

MiB = 1024 * 1024

SCENE = r"""
import sys
from pathlib import Path
import bpy

project, names = Path(sys.argv[1]), sys.argv[2:]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.wm.save_as_mainfile(filepath=str(project / "shot.blend"))
for index, name in enumerate(names):
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    node = material.node_tree.nodes.new("ShaderNodeTexImage")
    node.image = bpy.data.images.load(f"//textures/{name}")
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(index, 0, 0), (index + 1, 0, 0), (index + 1, 1, 0)], [], [(0, 1, 2)])
    mesh.materials.append(material)
    bpy.context.scene.collection.objects.link(bpy.data.objects.new(name, mesh))
bpy.ops.wm.save_as_mainfile(filepath=str(project / "shot.blend"))
"""


def noise_png(path: Path, width: int, height: int) -> None:
    """An RGBA PNG of random pixels with stored (level 0) deflate: incompressible, and fast to write."""
    raw = bytearray()
    row = width * 4
    noise = os.urandom(row * height)
    for y in range(height):
        raw += b"\x00" + noise[y * row : (y + 1) * row]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b"")
    )


def make_project(project: Path, textures: int) -> list[Path]:
    (project / "textures").mkdir(parents=True)
    paths = [project / "textures" / f"noise_{index:02d}.png" for index in range(textures)]
    for path in paths:
        noise_png(path, 2048, 1024)  # 8 MiB
    paths.append(project / "textures" / "plate.png")
    noise_png(paths[-1], 4096, 5120)  # 80 MiB: above the 64 MiB multipart threshold
    subprocess.run(
        [sys.executable, "-c", SCENE, str(project), *(path.name for path in paths)], check=True, capture_output=True
    )
    return paths


def project_bytes(project: Path) -> int:
    return sum(path.stat().st_size for path in project.rglob("*") if path.is_file())


def submit(connection: Connection, blend: Path) -> tuple[int, float, preparing.PreparedJob]:
    """(bytes uploaded, prepare() seconds, the prepared job); the execution is stopped at once."""
    started = time.perf_counter()
    prepared = preparing.prepare(preparing.SubmitRequest(blend))
    prepare_seconds = time.perf_counter() - started
    if prepared.missing:
        raise RuntimeError(f"the bench project lacks files: {prepared.missing}")
    uploaded = [0]

    def progress(done: int, total: int) -> None:
        uploaded[0] = max(uploaded[0], done)

    try:
        job = starting.submit_prepared(connection, prepared, progress=progress)
    finally:
        prepared.cleanup()
    starting.stop(connection, job, "bench: only the upload is measured")
    return uploaded[0] + len(json.dumps(prepared.manifest()).encode()), prepare_seconds, prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--textures", type=int, default=16, help="8 MiB textures besides the 80 MiB plate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-resubmit-") as temp:
        work = Path(temp)
        os.environ[hashcache.CACHE_ENV] = str(work / "hash-cache")
        project = work / "project"
        textures = make_project(project, args.textures)
        size = project_bytes(project)
        time.sleep(hashcache.RACY_SECONDS)
        cloud = localcloud.start(work / "cloud", workers=1)
        try:
            connection = Connection(ConnectionSettings(stack=cloud.stack, endpoint=cloud.endpoint))
            blend = project / "shot.blend"
            first, cold_seconds, prepared = submit(connection, blend)
            second, warm_seconds, _ = submit(connection, blend)
            changed = textures[len(textures) // 2]
            noise_png(changed, 2048, 1024)
            changed_size = changed.stat().st_size
            third, _, _ = submit(connection, blend)
        finally:
            cloud.stop()
    print(f"project: {size / MiB:.1f} MiB in {len(prepared.files)} files (main {prepared.main})")
    print(f"first submission uploaded {first / MiB:.1f} MiB")
    print(f"hashing, cold cache: {size / MiB / cold_seconds:.0f} MiB/s ({cold_seconds:.2f} s for prepare())")
    print(f"hashing, warm cache: {size / MiB / warm_seconds:.0f} MiB/s ({warm_seconds:.3f} s for prepare())")
    print(
        f"one texture changed ({changed_size} bytes): uploaded {third} bytes, "
        f"{third / changed_size:.3f} of the texture's size (target about 1.0)"
    )
    print(f"second submission uploaded {second} bytes ({second / size:.1e} of the project: the manifest)")
    print(f"ratio: {second / size:.3f}")


if __name__ == "__main__":
    main()
