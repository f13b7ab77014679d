"""S3 access for the worker: plain boto3 clients, adaptive retries, and the few calls the worker makes.

boto3 honours ``AWS_ENDPOINT_URL``, which is how the local cloud and the tests point the worker at moto; nothing
here knows about them. Errors are sorted into two kinds because the retry strategy needs them apart: a
*transient* one (throttling, 5xx, a dropped connection: the attempt is retried, exit 75) and a *deterministic*
one (a missing key, a forbidden bucket: retrying will not help, exit 65).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    ReadTimeoutError,
)
from render_contract import layout
from render_contract.errors import InputNotFound, InvalidInput
from render_contract.failures import FrameFailure

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


ACCESS_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
DIGEST_METADATA = "sha256"
"""Object metadata key (``x-amz-meta-sha256``) holding the hex SHA-256 the worker computed of the frame it verified."""
PARALLEL_HEADS = 16


class TransientError(Exception):
    """An AWS or network failure that a later attempt may not meet: the worker exits 75 so Batch retries."""


def client(max_connections: int = 32) -> Any:
    """An S3 client with adaptive retries (client-side rate limiting on throttles) and a pool wide enough for the
    parallel downloads; the region comes from ``AWS_REGION`` (set by ECS) or ``AWS_DEFAULT_REGION``, the number
    of attempts from ``AWS_MAX_ATTEMPTS`` (default 10)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    try:
        attempts = max(1, int(os.environ.get("AWS_MAX_ATTEMPTS", "") or 10))
    except ValueError:
        attempts = 10
    config = Config(
        retries={"mode": "adaptive", "max_attempts": attempts},
        max_pool_connections=max_connections,
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client("s3", region_name=region, config=config)


def is_transient(exc: BaseException) -> bool:
    """Whether a later attempt could succeed where this one failed."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | ConnectTimeoutError):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in TRANSIENT_CODES or status >= 500
    # Other botocore errors (no credentials, bad parameters) are configuration faults: deterministic.
    return isinstance(exc, ConnectionError | TimeoutError)


def is_access_denied(exc: BaseException) -> bool:
    """S3 refused the credentials or the bucket policy: a later attempt with the same role will be refused too."""
    if not isinstance(exc, ClientError) or is_transient(exc):
        return False
    code = exc.response.get("Error", {}).get("Code")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ACCESS_DENIED_CODES or status == 403


def is_not_found(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code")
    return code in {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


def read_bytes(s3: Any, bucket: str, key: str) -> bytes:
    """The whole object; a missing one is ``InputNotFound`` (deterministic)."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            raise InputNotFound(f"s3://{bucket}/{key} does not exist") from exc
        raise


def download(s3: Any, bucket: str, key: str, path: os.PathLike[str] | str) -> None:
    """Downloads to ``path`` (ranged, parallel parts for large files); a missing key is ``InputNotFound``."""
    try:
        s3.download_file(bucket, key, os.fspath(path))
    except ClientError as exc:
        if is_not_found(exc):
            raise InputNotFound(f"s3://{bucket}/{key} does not exist") from exc
        raise


def upload(s3: Any, path: os.PathLike[str] | str, bucket: str, key: str, content_type: str | None = None) -> None:
    """Uploads a finished local file. A PutObject (or a completed multipart upload) appears whole or not at all,
    so a worker killed mid-upload never leaves a half-written frame behind."""
    extra = {"ContentType": content_type} if content_type else None
    s3.upload_file(os.fspath(path), bucket, key, ExtraArgs=extra)


def sha256_file(path: os.PathLike[str] | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_frame(s3: Any, path: os.PathLike[str] | str, bucket: str, key: str, sha256_hex: str) -> None:
    """Uploads a verified frame with its SHA-256 twice over: as the S3 checksum (S3 recomputes it from the body and
    refuses the PUT on a mismatch, so the object is the bytes that were verified) and as metadata, which is what
    marks the object as the worker's. One PutObject: frames are far below its 5 GB limit, and it is atomic."""
    checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    with open(path, "rb") as body:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
            Metadata={DIGEST_METADATA: sha256_hex},
        )


def _stored_hex(checksum: str | None) -> str | None:
    if not checksum or "-" in checksum:  # a composite (multipart) checksum is not the object's digest
        return None
    try:
        raw = base64.b64decode(checksum, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def recorded_digest(s3: Any, bucket: str, key: str) -> str | None:
    """The object's SHA-256 when the digest the worker recorded matches the checksum S3 stored, else None.

    An object planted by anything else (no metadata, another checksum, none at all) is not the worker's frame:
    it is rendered again and overwritten, never trusted."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    recorded = str(head.get("Metadata", {}).get(DIGEST_METADATA, "")).lower()
    stored = _stored_hex(head.get("ChecksumSHA256"))
    return recorded if recorded and recorded == stored else None


def verified_frames(
    s3: Any, bucket: str, job_id: str, extension: str, frames: Iterable[int]
) -> tuple[set[int], set[int]]:
    """(frames whose object carries a matching recorded digest, frames present in S3 without one), for ``frames``.

    One listing, then a HEAD per listed frame (in parallel): a listing shows neither metadata nor checksum values.
    """
    wanted = set(frames)
    present = sorted(list_frames(s3, bucket, job_id, extension) & wanted)
    if not present:
        return set(), set()

    def check(frame: int) -> bool:
        return recorded_digest(s3, bucket, layout.frame_key(job_id, frame, extension)) is not None

    with ThreadPoolExecutor(max_workers=min(PARALLEL_HEADS, len(present))) as pool:
        results = list(pool.map(check, present))
    good = {frame for frame, ok in zip(present, results, strict=True) if ok}
    return good, set(present) - good


def download_verified(s3: Any, bucket: str, key: str, path: os.PathLike[str] | str) -> str | None:
    """Downloads an object the worker uploaded; returns why it cannot be trusted, or None when the bytes hash to
    both the recorded digest and the stored checksum (botocore also checks the body against the latter)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if is_not_found(exc):
            return "not in S3"
        raise
    digest = hashlib.sha256()
    try:
        with open(path, "wb") as handle:
            for block in response["Body"].iter_chunks(1 << 20):
                digest.update(block)
                handle.write(block)
    except FlexibleChecksumError:
        return "its bytes do not match the checksum S3 stored"
    actual = digest.hexdigest()
    recorded = str(response.get("Metadata", {}).get(DIGEST_METADATA, "")).lower()
    stored = _stored_hex(response.get("ChecksumSHA256"))
    if not recorded or not stored:
        return "no recorded SHA-256 (not uploaded by the worker)"
    if not actual == recorded == stored:
        return f"its SHA-256 {actual[:12]}... does not match the recorded {recorded[:12]}..."
    return None


def list_frames(s3: Any, bucket: str, job_id: str, extension: str) -> set[int]:
    """Frame numbers already in S3 for the job, in one paginated listing (not a HEAD per frame).

    Only non-empty objects with the plan's extension count: anything else under the prefix is not a frame.
    """
    prefix = layout.frames_prefix(job_id)
    found: set[int] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key: str = obj["Key"]
            if obj.get("Size", 0) <= 0 or not key.endswith("." + extension):
                continue
            frame = layout.frame_from_key(key)
            if frame is not None:
                found.add(frame)
    return found


def failed_frames(s3: Any, bucket: str, job_id: str, frames: Iterable[int]) -> dict[int, FrameFailure]:
    """The failure records (``failed/<frame>.json``) of ``frames``: one listing, then a GET per record found.

    A record that cannot be read is left out (the frame is then simply rendered again)."""
    wanted = set(frames)
    keys: dict[int, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=layout.failed_prefix(job_id)):
        for obj in page.get("Contents", []):
            frame = layout.frame_from_key(obj["Key"])
            if frame is not None and frame in wanted:
                keys[frame] = obj["Key"]
    found: dict[int, FrameFailure] = {}
    for frame, key in sorted(keys.items()):
        try:
            found[frame] = FrameFailure.from_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except InvalidInput:
            continue
        except ClientError as exc:
            if not is_not_found(exc):
                raise
    return found


def put_json(s3: Any, bucket: str, key: str, data: dict[str, Any]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(data, indent=1).encode(), ContentType="application/json")


def describe_frames(frames: Iterable[int], limit: int = 10) -> str:
    """``"3, 5, 7 ... (12 frames)"``: a short, readable list for logs and error messages."""
    frames = sorted(frames)
    head = ", ".join(str(f) for f in frames[:limit])
    more = f", ... ({len(frames)} frames)" if len(frames) > limit else ""
    return head + more
