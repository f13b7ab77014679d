"""Downloads stay inside their folder: hostile output keys, judged under POSIX and Windows rules on any OS."""

from __future__ import annotations

import ntpath
import posixpath
import uuid
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from render_on_aws.core import cli, download_paths, downloading
from render_on_aws.core.download_paths import SkippedKey, UnsafeKey, local_path, plan

PREFIX = "frames/"
TARGETS = {posixpath: "/home/artist/renders/job-frames", ntpath: "C:\\Users\\artist\\renders\\job-frames"}
PATHS = pytest.mark.parametrize("path", [posixpath, ntpath], ids=["posix", "windows"])

HOSTILE = [
    "frames/..",
    "frames/.",
    "frames/../x",
    "frames/sub/../../x",
    "frames/..\\..\\x",
    "frames/C:\\x",
    "frames/C:x",
    "frames/C:",
    "frames/\\\\?\\C:\\x",
    "frames/\\\\server\\share\\x",
    "frames//server/share/x",
    "frames//etc/passwd",
    "frames/",
    "frames/sub/",
    "frames/CON.png",
    "frames/con",
    "frames/NUL.tar.gz",
    "frames/AUX .png",
    "frames/com1.png",
    "frames/LPT9",
    "frames/COM¹.png",
    "frames/a:b",
    "frames/000001.png:stream",
    "frames/0001\n.png",
    "frames/a\rb",
    "frames/a\x00b",
    "frames/a\x7fb",
    "frames/a.",
    "frames/a ",
    "frames/...",
    "frames/a?b",
    "frames/a*b",
    "frames/a|b",
    'frames/a"b',
    "frames/<a>",
    "frames/" + "a" * 256,
    "frames/" + "é" * 128,  # 256 bytes in UTF-8
    "other/000001.png",
    "/frames/000001.png",
]


@PATHS
@pytest.mark.parametrize("key", HOSTILE)
def test_a_hostile_key_has_no_local_path(path: ModuleType, key: str) -> None:
    with pytest.raises(UnsafeKey):
        local_path(TARGETS[path], PREFIX, key, path)


@PATHS
def test_safe_keys_keep_their_sub_folders(path: ModuleType) -> None:
    target = TARGETS[path]
    assert local_path(target, PREFIX, "frames/000001.png", path) == path.join(target, "000001.png")
    assert local_path(target, PREFIX, "frames/sub/000001.png", path) == path.join(target, "sub", "000001.png")
    for name in ("CONSOLE.png", "com10.png", "nul_pass.exr", ".hidden", "a b.png", "é" * 127 + "a"):
        assert local_path(target, PREFIX, f"frames/{name}", path) == path.join(target, name)


@PATHS
def test_the_plan_skips_hostile_keys_with_their_reasons(path: ModuleType) -> None:
    keys = ["frames/000001.png", "frames/..\\..\\x", "frames/CON.png", "frames/a:b", "frames/x\ny"]
    planned = plan(TARGETS[path], PREFIX, keys, path)
    assert [key for key, _ in planned.files] == ["frames/000001.png"]
    reasons = {skipped.key: skipped.reason for skipped in planned.skipped}
    assert reasons == {
        "frames/..\\..\\x": "backslash (a Windows path separator)",
        "frames/CON.png": "'CON' is a reserved Windows device name",
        "frames/a:b": "colon (a drive letter or an NTFS stream)",
        "frames/x\ny": "control character",
    }
    assert {skipped.name for skipped in planned.skipped} == {"UnsafeDownloadKey"}


@PATHS
def test_the_plan_never_writes_one_file_twice(path: ModuleType) -> None:
    target = TARGETS[path]
    keys = [
        "frames/000001.png",
        "frames/sub/000001.png",  # a different file: sub-folders are kept
        "frames/A.png",
        "frames/a.png",  # the same file on Windows and macOS
        "frames/\u00e9.png",
        "frames/e\u0301.png",  # the same name, decomposed (as macOS spells it)
        "frames/layer",
        "frames/layer/000001.png",  # needs a folder where a file is
        "frames/pass/000001.png",
        "frames/PASS",  # a file where a folder is
    ]
    planned = plan(target, PREFIX, keys, path)
    assert planned.files == [
        ("frames/000001.png", path.join(target, "000001.png")),
        ("frames/sub/000001.png", path.join(target, "sub", "000001.png")),
        ("frames/A.png", path.join(target, "A.png")),
        ("frames/\u00e9.png", path.join(target, "\u00e9.png")),
        ("frames/layer", path.join(target, "layer")),
        ("frames/pass/000001.png", path.join(target, "pass", "000001.png")),
    ]
    assert [(skipped.key, skipped.reason) for skipped in planned.skipped] == [
        ("frames/a.png", "same file as 'frames/A.png' on a case-insensitive disk"),
        ("frames/e\u0301.png", "same file as 'frames/\u00e9.png' on a case-insensitive disk"),
        ("frames/layer/000001.png", "its folder would be the file 'frames/layer'"),
        ("frames/PASS", "a folder of 'frames/pass/000001.png' has this name"),
    ]


def test_the_command_line_names_a_skipped_key(capsys: pytest.CaptureFixture[str]) -> None:
    cli._warn_skipped(SkippedKey("jobs/j/frames/CON.png", "'CON' is a reserved Windows device name"))
    assert capsys.readouterr().err == (
        "warning: UnsafeDownloadKey: 'jobs/j/frames/CON.png': 'CON' is a reserved Windows device name\n"
    )


def test_download_frames_confines_hostile_keys(tmp_path: Path, bucket: str) -> None:
    """Keys planted in a finished job's frames prefix on the moto server, downloaded by the real client code."""
    s3 = boto3.client("s3")
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    prefix = f"jobs/{job_id}/frames/"
    good = {"000001.png": b"one", "sub/000001.png": b"sub one", "A.png": b"upper"}
    hostile = ["..", "../x", "../../escaped.png", "..\\..\\x", "C:\\x", "\\\\?\\C:\\x", "CON.png", "a:b", "0002\t.png"]
    # A newline cannot be planted here: moto's server answers 404 to such a PUT (the pure tests cover it).
    hostile += ["a.png", "000001.png/inner"]  # collide with good keys (case; a file used as a folder)
    for name, body in good.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=body)
    for name in hostile:
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=b"hostile")
    listed = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
    assert listed == {prefix + name for name in [*good, *hostile]}, "moto stores every planted key as given"

    target = tmp_path / "dl" / f"{job_id}-frames"
    paths, skipped = downloading.download_frames(s3, bucket, job_id, target)

    assert sorted(paths) == sorted(target / name for name in good)
    assert {path.relative_to(target).as_posix(): path.read_bytes() for path in paths} == good
    assert sorted(item.key for item in skipped) == sorted(prefix + name for name in hostile)
    written = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file())
    assert written == sorted(f"dl/{job_id}-frames/{name}" for name in good), "nothing outside the folder"


def test_the_module_needs_only_the_standard_library() -> None:
    source = Path(download_paths.__file__).read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {
        "__future__",
        "os.path",
        "re",
        "unicodedata",
        "collections.abc",
        "dataclasses",
        "types",
        "typing",
        "render_contract.errors",
    }
