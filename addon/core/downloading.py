"""Downloading a finished job: its video, and on request every frame, into a folder of the artist's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from render_contract.errors import InvalidInput
from render_contract.layout import frames_prefix
from render_contract.phases import Phase

from .connection import Connection
from .following import JobWatcher
from .jobref import JobRef


def frames_folder(directory: Path, job: JobRef) -> Path:
    """Where a job's frames land: a folder of its own, so two jobs never overwrite each other."""
    return directory / f"{job.job_id}-frames"


def download(connection: Connection, job: JobRef, directory: Path, frames: bool = False) -> list[Path]:
    """Downloads the video (and with ``frames`` every frame) into ``directory``; returns the video first."""
    status = JobWatcher(connection, job).poll()
    status.raise_for_failure()
    if status.phase != Phase.DONE or not status.video_key:
        raise InvalidInput(f"job {job.job_id} is {status.phase}: nothing to download yet")
    s3 = connection.client("s3")
    directory.mkdir(parents=True, exist_ok=True)
    video = directory / status.video_key.rsplit("/", 1)[-1]
    s3.download_file(job.bucket, status.video_key, str(video))
    paths = [video]
    if frames:
        target = frames_folder(directory, job)
        target.mkdir(exist_ok=True)
        paginator = s3.get_paginator("list_objects_v2")
        keys = [
            item["Key"]
            for page in paginator.paginate(Bucket=job.bucket, Prefix=frames_prefix(job.job_id))
            for item in page.get("Contents", [])
        ]

        def fetch(key: str) -> Path:
            path = target / key.rsplit("/", 1)[-1]
            s3.download_file(job.bucket, key, str(path))
            return path

        with ThreadPoolExecutor(8) as pool:
            paths.extend(pool.map(fetch, keys))
    return paths
