"""Downloading a finished job: its video, and on request every frame, into a folder of the artist's.

The keys are whatever is in the bucket, so :mod:`.download_paths` decides where each may go: nothing lands
outside the folder on any OS, sub-folders are kept, and no key overwrites another key's file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from render_contract.errors import InvalidInput, UnsafeDownloadKey
from render_contract.layout import frames_prefix, job_prefix
from render_contract.phases import Phase

from . import download_paths
from .connection import Connection
from .download_paths import SkippedKey
from .following import JobWatcher
from .jobref import JobRef

log = logging.getLogger(__name__)


def frames_folder(directory: Path, job: JobRef) -> Path:
    """Where a job's frames land: a folder of its own, so two jobs never overwrite each other."""
    return directory / f"{job.job_id}-frames"


def download(
    connection: Connection,
    job: JobRef,
    directory: Path,
    frames: bool = False,
    on_skipped: Callable[[SkippedKey], None] | None = None,
) -> list[Path]:
    """Downloads the video (and with ``frames`` every frame) into ``directory``; returns the video first.

    Frame keys that are not safe local names are skipped, each reported to ``on_skipped`` (default: logged).
    """
    status = JobWatcher(connection, job).poll()
    status.raise_for_failure()
    if status.phase != Phase.DONE or not status.video_key:
        raise InvalidInput(f"job {job.job_id} is {status.phase}: nothing to download yet")
    s3 = connection.client("s3")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        video = Path(download_paths.local_path(directory, job_prefix(job.job_id), status.video_key))
    except download_paths.UnsafeKey as reason:
        raise UnsafeDownloadKey(f"not downloading the video {status.video_key!r}: {reason}") from None
    video.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(job.bucket, status.video_key, str(video))
    paths = [video]
    if frames:
        fetched, skipped = download_frames(s3, job.bucket, job.job_id, frames_folder(directory, job))
        paths.extend(fetched)
        for item in skipped:
            (on_skipped or _log_skipped)(item)
    return paths


def download_frames(s3: Any, bucket: str, job_id: str, target: Path) -> tuple[list[Path], list[SkippedKey]]:
    """Downloads every key under the job's frames prefix into ``target``, sub-folders kept; returns the skipped."""
    target.mkdir(parents=True, exist_ok=True)
    prefix = frames_prefix(job_id)
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]
    planned = download_paths.plan(target, prefix, keys)

    def fetch(item: tuple[str, str]) -> Path:
        key, local = item
        path = Path(local)
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, local)
        return path

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(fetch, planned.files)), planned.skipped


def _log_skipped(skipped: SkippedKey) -> None:
    log.warning("%s: %s", skipped.name, skipped)
