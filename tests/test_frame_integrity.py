"""A frame counts as done only when it is whole; the worker's faults have names; the file's Python never runs.

Real bpy renders every still format the worker writes, the worker runs as Batch runs it against a moto server,
and S3 access denial comes from moto's own IAM enforcement (a moto server of its own with authentication on).
The one stand-in is the full disk: no test can fill this machine's disk, so a download raises ``ENOSPC``.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from render_contract import exitcodes, layout
from render_contract.errors import AccessDenied, NoSpace
from render_worker import cli, s3io, verify

from tests.conftest import REGION, free_port, make_scene
from tests.test_worker import (
    SKIPPED,
    error_record,
    frames_in_s3,
    make_plan,
    rendered,
    run_worker,
    upload_blend,
)

FORMATS = {"PNG": "png", "JPEG": "jpg", "OPEN_EXR": "exr", "TIFF": "tif", "BMP": "bmp", "WEBP": "webp"}
RENDER_EVERY_FORMAT = """
import sys, bpy
out = sys.argv[1]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = "BLENDER_WORKBENCH"
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 36, 100
camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
scene.collection.objects.link(camera)
scene.camera = camera
scene.render.use_file_extension = True
for fmt, ext in %r.items():
    scene.render.image_settings.file_format = fmt
    scene.render.filepath = f"{out}/frame_{ext}"
    bpy.ops.render.render(write_still=True)
scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
scene.render.filepath = f"{out}/multilayer"
bpy.ops.render.render(write_still=True)
"""


def png(width: int, height: int, seed: int = 1) -> bytes:
    """A valid RGB PNG of noise (incompressible, so it is big enough to truncate at 4,096 bytes), stdlib only."""
    rows = b"".join(b"\x00" + hashlib.shake_256(f"{seed}-{y}".encode()).digest(width * 3) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return verify.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 64x36 image per still format, as real Blender writes them (plus a multi-layer EXR)."""
    out = tmp_path_factory.mktemp("formats")
    subprocess.run([sys.executable, "-c", RENDER_EVERY_FORMAT % FORMATS, str(out)], check=True, capture_output=True)
    found = {ext: out / f"frame_{ext}.{ext}" for ext in FORMATS.values()}
    found["multilayer.exr"] = out / "multilayer.exr"
    return found


# ---- the verifier -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [*FORMATS.values(), "multilayer.exr"])
def test_every_format_blender_writes_passes_and_any_truncation_fails(images: dict[str, Path], ext: str) -> None:
    path = images[ext]
    suffix = path.suffix
    assert verify.file_defect(path) is None
    data = path.read_bytes()
    for cut in sorted({1, 2, 16, len(data) // 2, len(data) - 2, len(data) - 1}):
        assert verify.defect(data[:cut], suffix), f"{path.name} truncated to {cut} of {len(data)} bytes passed"
    assert verify.defect(b"\x00" * 30, suffix)
    assert verify.defect(b"", suffix) == "empty file"


def test_a_truncated_4096_byte_png_and_a_flipped_bit_are_refused(tmp_path: Path) -> None:
    whole = png(256, 64)
    assert len(whole) > 8192 and verify.defect(whole, "png") is None
    assert "truncated" in (verify.defect(whole[:4096], "png") or "")
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0x10
    assert "CRC" in (verify.defect(bytes(flipped), "png") or "")
    no_end = whole[: -len(b"\x00\x00\x00\x00IEND\xaeB`\x82")]
    assert verify.defect(no_end, "png")
    path = tmp_path / "000001.png"
    path.write_bytes(whole[:4096])
    assert verify.file_defect(path)
    assert verify.defect(whole, "gif") == "no check for .gif images"


def test_moto_keeps_the_sha256_checksum_a_frame_is_uploaded_with(bucket: str, tmp_path: Path) -> None:
    """What the worker relies on: S3 stores the checksum sent with the PUT and returns it with the metadata.
    (Real S3 also refuses a body that does not match it; moto 5.2.5 stores it without checking, and botocore
    checks it on a GET with ChecksumMode, which the stitch uses.)"""
    s3 = boto3.client("s3")
    path = tmp_path / "f.png"
    path.write_bytes(png(8, 8))
    digest = s3io.sha256_file(path)
    s3io.upload_frame(s3, path, bucket, "jobs/j/frames/000001.png", digest)
    head = s3.head_object(Bucket=bucket, Key="jobs/j/frames/000001.png", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(digest)).decode()
    assert head["Metadata"] == {"sha256": digest}
    assert s3io.recorded_digest(s3, bucket, "jobs/j/frames/000001.png") == digest
    assert s3io.download_verified(s3, bucket, "jobs/j/frames/000001.png", tmp_path / "back.png") is None
    assert (tmp_path / "back.png").read_bytes() == path.read_bytes()

    s3.put_object(Bucket=bucket, Key="jobs/j/frames/000002.png", Body=path.read_bytes())  # no checksum, no digest
    assert s3io.recorded_digest(s3, bucket, "jobs/j/frames/000002.png") is None
    assert s3io.recorded_digest(s3, bucket, "jobs/j/frames/000003.png") is None  # absent


# ---- the worker on the moto server --------------------------------------------------------------------------------
def plant(bucket: str, job_id: str, frame: int, data: bytes, recorded: bool = False) -> None:
    """Puts ``data`` at a frame key; ``recorded`` gives it a matching digest and checksum, as an upload by a worker
    that did not verify its images would have."""
    extra: dict = {}
    if recorded:
        digest = hashlib.sha256(data)
        extra = {
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(digest.digest()).decode(),
            "Metadata": {"sha256": digest.hexdigest()},
        }
    boto3.client("s3").put_object(Bucket=bucket, Key=layout.frame_key(job_id, frame, "png"), Body=data, **extra)


def test_foreign_and_truncated_objects_at_frame_keys_are_rendered_again_never_skipped(
    bucket: str, tiny_scene: Path
) -> None:
    plan = make_plan(bucket, "job-foreign", upload_blend(bucket, tiny_scene), frames=(1, 4, 1))
    plant(bucket, plan.job_id, 1, b"not a png, thirty bytes long.")  # a foreign object
    plant(bucket, plan.job_id, 2, png(256, 64)[:4096])  # a disk-full render, uploaded by something else
    s3 = boto3.client("s3")
    whole = png(64, 36)
    s3.put_object(  # a digest that does not match the stored checksum
        Bucket=bucket,
        Key=layout.frame_key(plan.job_id, 3, "png"),
        Body=whole,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=base64.b64encode(hashlib.sha256(whole).digest()).decode(),
        Metadata={"sha256": "0" * 64},
    )

    result = run_worker("render", plan)
    assert result.returncode == exitcodes.EXIT_OK, result.stderr
    assert sorted(rendered(result.stderr)) == [1, 2, 3, 4]
    assert SKIPPED.findall(result.stderr) == []
    assert result.stderr.count("no matching recorded SHA-256 (foreign or corrupt): rendering it again") == 3
    for frame, data in frames_in_s3(bucket, plan.job_id).items():
        assert verify.defect(data, "png") is None, frame
        key = layout.frame_key(plan.job_id, frame, "png")
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        digest = hashlib.sha256(data)
        assert head["Metadata"]["sha256"] == digest.hexdigest()
        assert head["ChecksumSHA256"] == base64.b64encode(digest.digest()).decode()

    again = run_worker("render", plan)  # now every frame is the worker's own: all skipped
    assert again.returncode == exitcodes.EXIT_OK, again.stderr
    assert sorted(int(n) for n in SKIPPED.findall(again.stderr)) == [1, 2, 3, 4]


def test_stitch_refuses_corrupt_frames_and_lists_them(bucket: str, tiny_scene: Path) -> None:
    plan = make_plan(bucket, "job-stitch-corrupt", upload_blend(bucket, tiny_scene))
    assert run_worker("render", plan).returncode == exitcodes.EXIT_OK
    plant(bucket, plan.job_id, 2, png(256, 64)[:4096], recorded=True)  # digest fine, image truncated
    plant(bucket, plan.job_id, 5, png(64, 36))  # a whole PNG, but not the worker's upload

    result = run_worker("stitch", plan)
    assert result.returncode == exitcodes.EXIT_FAILED, result.stderr
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "stitch-attempt-1.json")
    assert record["error"] == "CorruptFrame" and record["frame"] == 2
    assert record["message"].startswith("2 of 6 frames are corrupt: 2 (truncated")
    assert "; 5 (no recorded SHA-256" in record["message"]
    assert "\n" not in record["message"]
    video = layout.video_key(plan.job_id, plan.job_name)
    assert not boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=video).get("Contents")


def test_disk_full_while_fetching_is_no_space_and_retried(
    bucket: str, tiny_scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's command line in this process, with the download's write failing as a full disk fails it."""
    plan = make_plan(bucket, "job-full", upload_blend(bucket, tiny_scene), frames=(1, 2, 1))

    def full_disk(_s3: object, _bucket: str, _key: str, path: os.PathLike[str] | str) -> None:
        with open(path, "wb") as handle:
            handle.write(b"BLENDER")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(s3io, "download", full_disk)
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "0")
    monkeypatch.setenv("AWS_BATCH_JOB_ATTEMPT", "3")
    code = cli.main(["render", "-i", plan.input_uri, "-o", plan.output_uri, "-f", str(plan.frames_per_job)])
    assert code == NoSpace.exit_code == exitcodes.EXIT_INTERRUPTED
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "render-chunk-0-attempt-3.json")
    assert record["error"] == "NoSpace"
    assert record["message"] == "the worker's disk is full: No space left on device"
    assert frames_in_s3(bucket, plan.job_id) == {}


def test_no_space_is_found_anywhere_in_the_cause_chain() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as outer:
        assert isinstance(cli.named_fault(outer), NoSpace)
    assert cli.named_fault(OSError(errno.EACCES, "Permission denied")) is None
    assert (
        cli.one_line("Traceback (most recent call last):\n  File x\nBoom")
        == "Traceback (most recent call last): File x Boom"
    )


# ---- S3 refusing the worker: a moto server of its own, with IAM enforced -------------------------------------------
@pytest.fixture
def iam_moto(tmp_path: Path) -> Iterator[str]:
    """A moto server that authenticates and authorises every request after the first three (which create the
    worker's IAM user, its policy and its access key)."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "moto.log").open("w"),
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                import urllib.request

                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_s3_access_denied_is_named_and_not_retried(
    iam_moto: str, tiny_scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = boto3.client(
        "iam", endpoint_url=iam_moto, region_name=REGION, aws_access_key_id="admin", aws_secret_access_key="admin"
    )
    iam.create_user(UserName="worker")
    bucket = "job-bucket-denied"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/jobs/*/frames/*"},
        ],
    }
    iam.put_user_policy(UserName="worker", PolicyName="no-frames", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="worker")["AccessKey"]
    # From here on this process and the worker are the IAM user, on the authenticating server.
    monkeypatch.setenv("AWS_ENDPOINT_URL", iam_moto)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # the default session caches the credentials it found
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    with pytest.raises(ClientError, match="AccessDenied"):  # the policy really is enforced
        s3.put_object(Bucket=bucket, Key="jobs/x/frames/000001.png", Body=b"x")
    plan = make_plan(bucket, "job-denied", upload_blend(bucket, tiny_scene), frames=(1, 2, 1))

    result = run_worker("render", plan)
    assert result.returncode == AccessDenied.exit_code == exitcodes.EXIT_FAILED, result.stderr
    assert "Traceback" not in result.stderr
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "render-chunk-0-attempt-1.json")
    assert record["error"] == "AccessDenied"
    assert record["message"].startswith("S3 refused PutObject: ") and "\n" not in record["message"]
    assert frames_in_s3(bucket, plan.job_id) == {}


# ---- the file's own Python never runs ------------------------------------------------------------------------------
HOOK_SCENE = """
import sys, bpy
src, out, marks = sys.argv[1], sys.argv[2], sys.argv[3]
bpy.ops.wm.open_mainfile(filepath=src)
text = bpy.data.texts.new("farm_hook.py")
text.use_module = True
text.write(
    "import bpy, pathlib\\n"
    f"MARKS = pathlib.Path({marks!r})\\n"
    "(MARKS / 'text_block').write_text('ran')\\n"
    "def on_frame(scene, *args):\\n"
    "    (MARKS / 'frame_change').write_text(str(scene.frame_current))\\n"
    "bpy.app.handlers.frame_change_pre.append(on_frame)\\n"
)
cube = next(o for o in bpy.data.objects if o.type == "MESH")
driver = cube.driver_add("location", 2).driver
driver.type = "SCRIPTED"
driver.expression = f"__import__('pathlib').Path({marks!r}, 'driver').write_text('ran') * 0 + frame"
bpy.ops.wm.save_as_mainfile(filepath=out)
"""
OPEN_AND_PLAY = """
import sys
from pathlib import Path
import bpy
from render_worker.render import open_blend
open_blend(Path(sys.argv[1]), allow_scripts=True)
bpy.context.scene.frame_set(2)
bpy.context.evaluated_depsgraph_get().update()
"""


def test_the_files_scripts_handlers_and_python_drivers_do_not_run_in_the_worker(bucket: str, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    plain = make_scene(
        tmp_path / "plain.blend", "--frame-end", "2", "--resolution", "64", "36", "--engine", "workbench"
    )
    hooked = tmp_path / "hooked.blend"
    subprocess.run(
        [sys.executable, "-c", HOOK_SCENE, str(plain), str(hooked), str(marks)], check=True, capture_output=True
    )
    assert list(marks.iterdir()) == []

    # The control: the same file, opened with scripts allowed, runs all three.
    subprocess.run([sys.executable, "-c", OPEN_AND_PLAY, str(hooked)], check=True, capture_output=True)
    assert sorted(p.name for p in marks.iterdir()) == ["driver", "frame_change", "text_block"]
    for mark in marks.iterdir():
        mark.unlink()

    plan = make_plan(bucket, "job-hooked", upload_blend(bucket, hooked, "uploads/hooked.blend"), frames=(1, 2, 1))
    result = run_worker("render", plan)
    assert result.returncode == exitcodes.EXIT_OK, result.stderr
    assert sorted(rendered(result.stderr)) == [1, 2]
    assert "the file's scripts were not run (auto-execution is off on the farm)" in result.stderr
    assert list(marks.iterdir()) == []
