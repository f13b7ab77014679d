"""The panel's preview: one rendered frame downloaded from S3, at most one or two calls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
from render_contract.layout import FRAME_DIGITS, frame_key, frames_prefix

from .jobref import JobRef


@dataclass(frozen=True)
class Preview:
    path: Path | None
    """The downloaded frame, or None when there was none to fetch (or it failed: only no preview this time)."""
    extension: str | None
    """The frames' extension, learnt from the first listing and reused (one call less every later time)."""
    calls: int


def fetch_preview(s3: Any, job: JobRef, frame: int, extension: str | None, folder: Path) -> Preview:
    """Downloads frame ``frame`` of ``job`` to ``folder/<jobId>/``; never raises for AWS or disk trouble."""
    calls = 0
    try:
        if extension is None:
            calls += 1
            listing = s3.list_objects_v2(
                Bucket=job.bucket, Prefix=f"{frames_prefix(job.job_id)}{frame:0{FRAME_DIGITS}d}.", MaxKeys=1
            )
            keys = [item["Key"] for item in listing.get("Contents", [])]
            if not keys:
                return Preview(None, None, calls)
            extension = keys[0].rsplit(".", 1)[-1]
        target = folder / job.job_id / f"{frame:0{FRAME_DIGITS}d}.{extension}"
        target.parent.mkdir(parents=True, exist_ok=True)
        calls += 1
        s3.download_file(job.bucket, frame_key(job.job_id, frame, extension), str(target))
        return Preview(target, extension, calls)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError):
        return Preview(None, extension, calls)
