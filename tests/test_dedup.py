"""Nothing is hashed or uploaded twice: the local hash cache and the content-addressed store (moto over HTTP)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from render_contract.errors import JobCancelled, UploadFailed
from render_on_aws.core import cas, hashcache

OLD = time.time() - 3600


def write(path: Path, data: bytes, mtime: float = OLD) -> Path:
    """A file whose mtime is well outside the racy window (as an artist's textures are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def cache_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(hashcache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / hashcache.FILE_NAME


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(hashcache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hashcache.cache_dir() == tmp_path / "xdg" / "render-on-aws"
    monkeypatch.setenv(hashcache.CACHE_ENV, str(tmp_path / "mine"))
    assert hashcache.cache_dir() == tmp_path / "mine"


def test_unchanged_files_are_not_read_again(tmp_path: Path, cache_path: Path) -> None:
    files = [write(tmp_path / f"t{i}.bin", os.urandom(1000 + i)) for i in range(5)]
    first = hashcache.HashCache()
    hashed = cas.hash_files(files, first)
    assert (first.hits, first.misses) == (0, 5)
    first.save()
    assert cache_path.is_file()

    # Same size and mtime, different bytes: a cache hit proves the file was not read (stat only).
    stale = files[0].read_bytes()
    write(files[0], bytes(reversed(stale)))
    second = hashcache.HashCache()
    again = cas.hash_files(files, second)
    assert (second.hits, second.misses) == (5, 0)
    assert {path: stored.sha256 for path, stored in again.items()} == {p: s.sha256 for p, s in hashed.items()}


def test_a_changed_file_is_hashed_again(tmp_path: Path, cache_path: Path) -> None:
    path = write(tmp_path / "texture.png", b"a" * 4096)
    cache = hashcache.HashCache()
    before = cas.hash_file(path, cache)
    cache.save()
    write(path, b"b" * 4096, mtime=OLD + 10)  # same size, new mtime
    cache = hashcache.HashCache()
    after = cas.hash_file(path, cache)
    assert after.sha256 != before.sha256 and cache.misses == 1


def test_a_just_written_file_is_not_cached(tmp_path: Path, cache_path: Path) -> None:
    path = tmp_path / "fresh.png"
    path.write_bytes(b"fresh")  # a second write within the same mtime tick would go unnoticed
    cache = hashcache.HashCache()
    cas.hash_file(path, cache)
    cache.save()
    assert not cache_path.exists()


def test_concurrent_savers_merge_and_a_corrupt_file_is_an_empty_cache(tmp_path: Path, cache_path: Path) -> None:
    a, b = write(tmp_path / "a", b"a"), write(tmp_path / "b", b"b")
    first, second = hashcache.HashCache(), hashcache.HashCache()  # both loaded before either saves
    cas.hash_file(a, first)
    cas.hash_file(b, second)
    first.save()
    second.save()
    entries = json.loads(cache_path.read_text())["entries"]
    assert set(entries) == {str(a), str(b)}
    assert not [p for p in cache_path.parent.iterdir() if p.name != hashcache.FILE_NAME], "temporary files left"

    cache_path.write_text("{not json")
    cache = hashcache.HashCache()
    assert cas.hash_file(a, cache).size == 1 and cache.misses == 1
    cache.save()
    assert str(a) in json.loads(cache_path.read_text())["entries"]


def test_only_missing_contents_are_uploaded(tmp_path: Path, bucket: str, cache_path: Path) -> None:
    s3 = boto3.client("s3")
    files = [write(tmp_path / "project" / f"tex{i}.bin", os.urandom(50_000)) for i in range(4)]
    duplicate = write(tmp_path / "project" / "copy.bin", files[0].read_bytes())
    stored = list(cas.hash_files([*files, duplicate]).values())
    seen: list[tuple[int, int]] = []
    report = cas.upload(s3, bucket, stored, progress=lambda done, total: seen.append((done, total)))
    assert (report.files_uploaded, report.bytes_uploaded) == (4, 200_000)  # the duplicate's content once
    assert seen[0] == (0, 200_000) and seen[-1] == (200_000, 200_000)
    for item in stored:
        assert s3.get_object(Bucket=bucket, Key=f"cas/sha256/{item.sha256}")["Body"].read() == item.path.read_bytes()

    again = cas.upload(s3, bucket, list(cas.hash_files([*files, duplicate]).values()))
    assert (again.files_uploaded, again.bytes_uploaded) == (0, 0)

    write(files[2], os.urandom(50_000), mtime=OLD + 5)
    changed = cas.upload(s3, bucket, list(cas.hash_files([*files, duplicate]).values()))
    assert (changed.files_uploaded, changed.bytes_uploaded) == (1, 50_000)


def test_a_file_changed_after_hashing_is_refused(tmp_path: Path, bucket: str) -> None:
    path = write(tmp_path / "t.bin", os.urandom(1000))
    stored = cas.hash_file(path)
    write(path, os.urandom(1000), mtime=OLD + 1)
    with pytest.raises(UploadFailed, match="changed since it was hashed"):
        cas.upload(boto3.client("s3"), bucket, [stored])
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_a_cancelled_upload_stops(tmp_path: Path, bucket: str) -> None:
    cancel = threading.Event()
    cancel.set()
    stored = cas.hash_file(write(tmp_path / "t.bin", os.urandom(1000)))
    with pytest.raises(JobCancelled):
        cas.upload(boto3.client("s3"), bucket, [stored], cancel=cancel)


# ---- S3-verified uploads ---------------------------------------------------------------------------------------
def checksum_headers(s3: object) -> list[dict[str, str]]:
    """Records the checksum headers of every request ``s3`` sends (observed on the wire, not mocked)."""
    seen: list[dict[str, str]] = []

    def record(request: object, **_: object) -> None:
        headers = request.headers  # type: ignore[attr-defined]
        seen.append(
            {
                "method": request.method,  # type: ignore[attr-defined]
                **{k.lower(): _text(v) for k, v in headers.items() if "checksum" in k.lower()},
            }
        )

    s3.meta.events.register("before-send.s3", record)  # type: ignore[attr-defined]
    return seen


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_every_upload_carries_its_sha256(tmp_path: Path, bucket: str) -> None:
    s3 = boto3.client("s3")
    stored = cas.hash_file(write(tmp_path / "t.bin", os.urandom(3000)))
    sent = checksum_headers(s3)
    cas.upload(s3, bucket, [stored])
    puts = [headers for headers in sent if headers["method"] == "PUT"]
    assert [headers["x-amz-checksum-sha256"] for headers in puts] == [cas.checksum_sha256(stored.sha256)]
    head = s3.head_object(Bucket=bucket, Key=f"cas/sha256/{stored.sha256}", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == cas.checksum_sha256(stored.sha256)
    assert head["Metadata"] == {"sha256": stored.sha256}


def test_a_multipart_upload_checksums_each_part_and_records_the_digest(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the transfer manager: a SHA-256 per part (S3's minimum part is 5 MiB), the full digest as metadata."""
    part = 5 * 1024 * 1024
    monkeypatch.setattr(cas, "TRANSFER", TransferConfig(multipart_threshold=part, multipart_chunksize=part))
    s3 = boto3.client("s3")
    stored = cas.hash_file(write(tmp_path / "big.bin", os.urandom(2 * part + 1000)))
    sent = checksum_headers(s3)
    assert cas.upload(s3, bucket, [stored]).files_uploaded == 1
    parts = [headers for headers in sent if headers["method"] == "PUT"]
    assert len(parts) == 3 and all(headers.get("x-amz-checksum-sha256") for headers in parts)
    head = s3.head_object(Bucket=bucket, Key=f"cas/sha256/{stored.sha256}", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] != cas.checksum_sha256(stored.sha256)  # a composite of the parts
    assert head["Metadata"] == {"sha256": stored.sha256}
    assert cas.upload(s3, bucket, [stored]).files_uploaded == 0  # recognised by its metadata


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param({"Body": b"garbage"}, id="no-checksum"),
        pytest.param({"Body": b"garbage", "ChecksumAlgorithm": "SHA256"}, id="checksum-of-garbage"),
        pytest.param({"Body": b"x" * 3000, "ChecksumAlgorithm": "SHA256"}, id="same-size"),
    ],
)
def test_a_poisoned_key_is_uploaded_over(tmp_path: Path, bucket: str, plant: dict[str, object]) -> None:
    s3 = boto3.client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})  # as on AWS
    data = os.urandom(3000)
    stored = cas.hash_file(write(tmp_path / "t.bin", data))
    key = f"cas/sha256/{stored.sha256}"
    s3.put_object(Bucket=bucket, Key=key, **plant)

    report = cas.upload(s3, bucket, [stored])
    assert (report.files_uploaded, report.bytes_uploaded, report.files_replaced) == (1, 3000, 1)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    assert len(versions) == 2, "the planted object is kept as an older version"
    assert cas.upload(s3, bucket, [stored]).files_uploaded == 0


def test_moto_does_not_verify_a_claimed_checksum(bucket: str) -> None:
    """What the local cloud does with a body that does not match its ChecksumSHA256 (moto 5.2.5): it stores it.

    AWS S3 refuses such a PUT (BadDigest), which is what protects a real upload; on moto the claim is stored as
    given. So the stored checksum is trusted only as far as S3 verified it, and on moto the size check and the
    garbage's own checksum (the poisoning tests) are what catch a planted object.
    """
    s3 = boto3.client("s3")
    claimed = cas.checksum_sha256(hashlib.sha256(b"what the key promises").hexdigest())
    s3.put_object(Bucket=bucket, Key="k", Body=b"something else", ChecksumAlgorithm="SHA256", ChecksumSHA256=claimed)
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == claimed


def test_a_file_written_during_its_upload_is_not_left_under_its_key(tmp_path: Path, bucket: str) -> None:
    """S3 would refuse the changed bytes of a single PUT; a multipart one is only checked part by part, so the
    client deletes what it uploaded when the file changed meanwhile, and the next submission uploads afresh."""
    s3 = boto3.client("s3")
    path = write(tmp_path / "t.bin", os.urandom(3000))
    stored = cas.hash_file(path)

    def touch(done: int, total: int) -> None:
        if done:
            os.utime(path, (OLD + 7, OLD + 7))

    with pytest.raises(UploadFailed, match="changed since it was hashed"):
        cas.upload(s3, bucket, [stored], progress=touch)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
