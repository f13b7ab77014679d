"""The panel's previews: the workers' small JPEGs (``jobs/<jobId>/previews/<frame>.jpg``), one GetObject each.

No listing is needed: a worker uploads a frame's preview before the frame itself, so the frame listing that
polling makes anyway says which previews exist. A preview that is not there (a frame rendered before previews
existed, a preview upload that failed) is remembered as unavailable and not asked for again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.exceptions
from render_contract.layout import FRAME_DIGITS, PREVIEW_EXTENSION, preview_key

from .jobref import JobRef


def preview_path(folder: Path, job_id: str, frame: int) -> Path:
    """Where a job's preview of ``frame`` lies on this machine (the add-on's temporary folder)."""
    return folder / job_id / f"{frame:0{FRAME_DIGITS}d}.{PREVIEW_EXTENSION}"


@dataclass
class PreviewFetch:
    fetched: list[int] = field(default_factory=list)
    unavailable: list[int] = field(default_factory=list)
    """Not in S3: not asked for again."""
    calls: int = 0


def fetch_previews(s3: Any, job: JobRef, frames: Iterable[int], folder: Path) -> PreviewFetch:
    """GETs the previews of ``frames`` into ``folder/<jobId>/``, one call each; never raises for AWS or disk trouble
    (a frame that failed for another reason than absence is simply tried again later)."""
    result = PreviewFetch()
    for frame in frames:
        target = preview_path(folder, job.job_id, frame)
        result.calls += 1
        try:
            body = s3.get_object(Bucket=job.bucket, Key=preview_key(job.job_id, frame))["Body"].read()
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            partial.write_bytes(body)
            partial.replace(target)  # whole or absent: the panel may load it at any moment
        except botocore.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                result.unavailable.append(frame)
            continue
        except (botocore.exceptions.BotoCoreError, OSError):
            continue
        result.fetched.append(frame)
    return result
