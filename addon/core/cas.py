"""The content-addressed store: each file is uploaded once, to ``cas/sha256/<hex>``, whoever needs it again.

Resubmitting an unchanged project uploads nothing but the manifest; a changed texture uploads only itself.
Progress is reported in bytes and every upload can be cancelled between parts.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from render_contract.errors import JobCancelled, UploadFailed
from render_contract.layout import cas_key

if TYPE_CHECKING:
    from .hashcache import HashCache

HASH_BLOCK = 8 * 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=8)
PARALLEL_FILES = 8
PARALLEL_HASHES = min(8, os.cpu_count() or 1)
Progress = Callable[[int, int], None]
"""Called with (bytes uploaded so far, bytes to upload in all), from worker threads."""


@dataclass(frozen=True)
class StoredFile:
    path: Path
    sha256: str
    size: int
    mtime_ns: int | None = None
    """The file's mtime when it was hashed: :func:`upload` refuses a file that changed since (its bytes would no
    longer match the key they are stored under)."""


@dataclass(frozen=True)
class UploadReport:
    files: int
    bytes_total: int
    files_uploaded: int
    bytes_uploaded: int


def hash_file(path: Path, cache: HashCache | None = None) -> StoredFile:
    """SHA-256 of a file, from ``cache`` when its size and mtime are unchanged since it was last hashed."""
    before = os.stat(path)
    if cache is not None and (known := cache.lookup(path, before)) is not None:
        return StoredFile(path, known, before.st_size, before.st_mtime_ns)
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
            size += len(block)
    # The mtime from *before* reading: a write during hashing then shows up as a change at upload time.
    stored = StoredFile(path, digest.hexdigest(), size, before.st_mtime_ns)
    after = os.stat(path)
    if cache is not None and size == before.st_size and _same(before, after):
        cache.store(path, before, stored.sha256)
    return stored


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def hash_files(paths: Iterable[Path], cache: HashCache | None = None) -> dict[Path, StoredFile]:
    """Hashes many files in parallel threads (hashlib releases the GIL on large blocks); each path once."""
    unique = list(dict.fromkeys(Path(path) for path in paths))
    with ThreadPoolExecutor(max(1, min(PARALLEL_HASHES, len(unique)))) as pool:
        return dict(zip(unique, pool.map(lambda path: hash_file(path, cache), unique), strict=True))


def _check_unchanged(stored: StoredFile) -> None:
    if stored.mtime_ns is None:
        return
    try:
        now = os.stat(stored.path)
    except OSError as error:
        raise UploadFailed(f"{stored.path.name} disappeared since it was hashed; submit again") from error
    if (now.st_size, now.st_mtime_ns) != (stored.size, stored.mtime_ns):
        raise UploadFailed(f"{stored.path.name} changed since it was hashed; submit again")


def missing(s3: Any, bucket: str, files: Iterable[StoredFile]) -> list[StoredFile]:
    """The files whose content the bucket does not hold yet (one HEAD each, in parallel)."""
    unique = {stored.sha256: stored for stored in files}

    def absent(stored: StoredFile) -> bool:
        try:
            s3.head_object(Bucket=bucket, Key=cas_key(stored.sha256))
            return False
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return True
            raise

    with ThreadPoolExecutor(PARALLEL_FILES) as pool:
        flags = list(pool.map(absent, unique.values()))
    return [stored for stored, is_absent in zip(unique.values(), flags, strict=True) if is_absent]


def upload(
    s3: Any,
    bucket: str,
    files: list[StoredFile],
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> UploadReport:
    """Uploads the files the bucket lacks; raises JobCancelled when ``cancel`` is set (between parts)."""
    todo = missing(s3, bucket, files)
    total = sum(stored.size for stored in todo)
    done = 0
    lock = threading.Lock()

    def on_bytes(count: int) -> None:
        nonlocal done
        if cancel is not None and cancel.is_set():
            raise JobCancelled("upload cancelled")
        with lock:
            done += count
            current = done
        if progress is not None:
            progress(current, total)

    def put(stored: StoredFile) -> None:
        if cancel is not None and cancel.is_set():
            raise JobCancelled("upload cancelled")
        _check_unchanged(stored)
        try:
            s3.upload_file(str(stored.path), bucket, cas_key(stored.sha256), Config=TRANSFER, Callback=on_bytes)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise UploadFailed(f"uploading {stored.path.name} failed: {error}") from error

    if progress is not None:
        progress(0, total)
    with ThreadPoolExecutor(PARALLEL_FILES) as pool:
        for future in [pool.submit(put, stored) for stored in todo]:
            future.result()
    return UploadReport(len(files), sum(f.size for f in files), len(todo), total)
