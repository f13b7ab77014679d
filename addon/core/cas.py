"""The content-addressed store: each file is uploaded once, to ``cas/sha256/<hex>``, whoever needs it again.

Resubmitting an unchanged project uploads nothing but the manifest; a changed texture uploads only itself.
Progress is reported in bytes and every upload can be cancelled between parts.

Every upload carries the file's SHA-256, so S3 itself refuses bytes that do not match the key they go to: a
single-part upload sends the digest computed at hashing time (``ChecksumSHA256``); a multipart one sends a
SHA-256 per part (S3 keeps a composite ``<b64>-<parts>``, since full-object SHA-256 is not offered for multipart
uploads) plus the full digest in the ``sha256`` metadata. "Already uploaded" is decided by that stored checksum,
never by the key merely existing: garbage planted at a real file's key is uploaded over (the bucket is
versioned, so the old object is kept for whoever wants to look at it).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from render_contract.errors import CorruptStoredFile, JobCancelled, UploadFailed
from render_contract.layout import cas_key

if TYPE_CHECKING:
    from .hashcache import HashCache

HASH_BLOCK = 8 * 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=8)
PARALLEL_FILES = 8
PARALLEL_HASHES = min(8, os.cpu_count() or 1)
Progress = Callable[[int, int], None]
"""Called with (bytes uploaded so far, bytes to upload in all), from worker threads."""
SHA256_METADATA = "sha256"
"""Object metadata holding the full hex digest: a multipart object's own checksum is only a composite of parts."""
log = logging.getLogger(__name__)


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
    files_replaced: int = 0
    """Of ``files_uploaded``, those whose key held other bytes (a :class:`CorruptStoredFile`) and were uploaded over."""


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


def checksum_sha256(hex_digest: str) -> str:
    """The digest as S3 spells ``ChecksumSHA256``: base64 of the raw 32 bytes."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def holds(head: dict[str, Any], stored: StoredFile) -> bool:
    """Whether a HeadObject (``ChecksumMode='ENABLED'``) answer describes exactly ``stored``'s bytes.

    The size must match, and either S3's own full-object checksum or, for a multipart object (whose checksum is
    a composite of its parts), the full digest recorded in its metadata at upload time.
    """
    if head.get("ContentLength") != stored.size:
        return False
    if head.get("ChecksumSHA256") == checksum_sha256(stored.sha256):
        return True
    return head.get("Metadata", {}).get(SHA256_METADATA) == stored.sha256


def _survey(s3: Any, bucket: str, files: Iterable[StoredFile]) -> tuple[list[StoredFile], list[StoredFile]]:
    """(absent, corrupt): the contents the bucket lacks, and those whose key holds something else."""
    unique = {stored.sha256: stored for stored in files}

    def state(stored: StoredFile) -> str:
        try:
            head = s3.head_object(Bucket=bucket, Key=cas_key(stored.sha256), ChecksumMode="ENABLED")
        except botocore.exceptions.ClientError as error:
            # 403: without s3:ListBucket on the key S3 answers a HEAD of a missing object with 403, not 404 (the
            # artist policy lists cas/ by prefix only); the upload that follows says whether writing is allowed.
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "403", "Forbidden"):
                return "absent"
            raise
        return "held" if holds(head, stored) else "corrupt"

    with ThreadPoolExecutor(PARALLEL_FILES) as pool:
        states = list(pool.map(state, unique.values()))
    pairs = list(zip(unique.values(), states, strict=True))
    return [f for f, st in pairs if st == "absent"], [f for f, st in pairs if st == "corrupt"]


def missing(s3: Any, bucket: str, files: Iterable[StoredFile]) -> list[StoredFile]:
    """The files whose content the bucket does not hold yet, or holds wrongly (one HEAD each, in parallel)."""
    absent, corrupt = _survey(s3, bucket, files)
    return absent + corrupt


def _extra_args(stored: StoredFile) -> dict[str, Any]:
    """What makes S3 verify the upload: the precomputed digest when it is one PUT, a SHA-256 per part otherwise.

    The transfer manager turns a precomputed ``ChecksumSHA256`` on a multipart upload into a FULL_OBJECT
    checksum, which S3 offers for CRC algorithms only; so large files let botocore checksum each part.
    """
    extra: dict[str, Any] = {"ChecksumAlgorithm": "SHA256", "Metadata": {SHA256_METADATA: stored.sha256}}
    if stored.size < TRANSFER.multipart_threshold:
        extra["ChecksumSHA256"] = checksum_sha256(stored.sha256)
    return extra


def upload(
    s3: Any,
    bucket: str,
    files: list[StoredFile],
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> UploadReport:
    """Uploads the files the bucket lacks or holds wrongly; raises JobCancelled when ``cancel`` is set (between
    parts), UploadFailed when S3 refuses a body (its checksum does not match) or a file changed since hashing."""
    absent, corrupt = _survey(s3, bucket, files)
    for stored in corrupt:
        log.warning(
            "%s: %s does not hold %s's bytes; uploading it again",
            CorruptStoredFile.__name__,
            cas_key(stored.sha256),
            stored.path.name,
        )
    todo = absent + corrupt
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
            s3.upload_file(
                str(stored.path),
                bucket,
                cas_key(stored.sha256),
                ExtraArgs=_extra_args(stored),
                Config=TRANSFER,
                Callback=on_bytes,
            )
            # A multipart upload's parts are checked against what was read, not against the digest: a file
            # written to during the upload would leave the wrong bytes under its key, claiming the right hash.
            _check_unchanged_after(s3, bucket, stored)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise UploadFailed(f"uploading {stored.path.name} failed: {error}") from error

    if progress is not None:
        progress(0, total)
    with ThreadPoolExecutor(PARALLEL_FILES) as pool:
        for future in [pool.submit(put, stored) for stored in todo]:
            future.result()
    return UploadReport(len(files), sum(f.size for f in files), len(todo), total, len(corrupt))


def _check_unchanged_after(s3: Any, bucket: str, stored: StoredFile) -> None:
    """Deletes what was just uploaded if the file changed meanwhile, so the next submission uploads it afresh."""
    try:
        _check_unchanged(stored)
    except UploadFailed:
        s3.delete_object(Bucket=bucket, Key=cas_key(stored.sha256))
        raise
