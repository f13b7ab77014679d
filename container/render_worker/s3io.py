"""S3 access for the worker: plain boto3 clients, adaptive retries, and the few calls the worker makes.

boto3 honours ``AWS_ENDPOINT_URL``, which is how the local cloud and the tests point the worker at moto; nothing
here knows about them. Errors are sorted into two kinds because the retry strategy needs them apart: a
*transient* one (throttling, 5xx, a dropped connection: the attempt is retried, exit 75) and a *deterministic*
one (a missing key, a forbidden bucket: retrying will not help, exit 65).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from render_contract import layout
from render_contract.errors import InputNotFound

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


def put_json(s3: Any, bucket: str, key: str, data: dict[str, Any]) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(data, indent=1).encode(), ContentType="application/json")


def describe_frames(frames: Iterable[int], limit: int = 10) -> str:
    """``"3, 5, 7 ... (12 frames)"``: a short, readable list for logs and error messages."""
    frames = sorted(frames)
    head = ", ".join(str(f) for f in frames[:limit])
    more = f", ... ({len(frames)} frames)" if len(frames) > limit else ""
    return head + more
