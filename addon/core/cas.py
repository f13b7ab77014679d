"""The content-addressed store: each file is uploaded once, to ``cas/sha256/<hex>``, whoever needs it again.

Resubmitting an unchanged project uploads nothing but the manifest; a changed texture uploads only itself.
Progress is reported in bytes and every upload can be cancelled between parts.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from .errors import JobCancelled, UploadFailed
from .layout import cas_key

HASH_BLOCK = 8 * 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=8)
PARALLEL_FILES = 8
Progress = Callable[[int, int], None]
"""Called with (bytes uploaded so far, bytes to upload in all), from worker threads."""


@dataclass(frozen=True)
class StoredFile:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class UploadReport:
    files: int
    bytes_total: int
    files_uploaded: int
    bytes_uploaded: int


def hash_file(path: Path) -> StoredFile:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
            size += len(block)
    return StoredFile(path, digest.hexdigest(), size)


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
