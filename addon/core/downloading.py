"""Downloading a finished job: its video, and on request every frame (named as the scene's output path names
them, :mod:`.deliveries`) and every File Output node file, into a folder of the artist's or where the scene says.

The keys are whatever is in the bucket, so :mod:`.download_paths` decides where each may go: nothing lands
outside the folder on any OS, sub-folders are kept, and no key overwrites another key's file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from render_contract import output_names
from render_contract.errors import InvalidInput, UnsafeDownloadKey
from render_contract.layout import frames_prefix, job_prefix, outputs_prefix, plan_key
from render_contract.phases import Phase
from render_contract.plan import Plan

from . import deliveries, download_paths
from .connection import Connection
from .download_paths import SkippedKey
from .following import JobWatcher
from .jobref import JobRef

log = logging.getLogger(__name__)


def frames_folder(directory: Path, job: JobRef) -> Path:
    """Where a job's frames and File Output node files land by default: ``<directory>/<job id>/``, so two jobs
    never overwrite each other."""
    return directory / job.job_id


@dataclass
class Downloaded:
    video: Path
    frames: list[Path] = field(default_factory=list)
    """The main frames, in frame order, named as the scene's output path names them."""
    outputs: list[Path] = field(default_factory=list)
    """The compositor's File Output node files, with their own names and sub-folders."""
    skipped: list[SkippedKey] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [self.video, *self.frames, *self.outputs]


def download(
    connection: Connection,
    job: JobRef,
    directory: Path,
    frames: bool = False,
    on_skipped: Callable[[SkippedKey], None] | None = None,
    job_folder: Path | None = None,
    output_root: Path | None = None,
) -> list[Path]:
    """Downloads the video (and with ``frames`` every frame and File Output node file); returns the video first.

    See :func:`download_job`; keys that are not safe local names are skipped, each reported to ``on_skipped``
    (default: logged).
    """
    result = download_job(connection, job, directory, frames, job_folder, output_root)
    for item in result.skipped:
        (on_skipped or _log_skipped)(item)
    return result.paths


def download_job(
    connection: Connection,
    job: JobRef,
    directory: Path,
    frames: bool = False,
    job_folder: Path | None = None,
    output_root: Path | None = None,
) -> Downloaded:
    """The video into ``directory``; with ``frames``, the frames named as the scene's output path names them and
    the File Output node files with their own names, into ``job_folder`` (default ``<directory>/<job id>/``).

    ``output_root`` (what ``//`` means: the .blend's folder) writes them where the scene says instead, as F12
    Render Animation would: the frames into the output path's folder, the node files at their paths below the
    .blend's folder (node folders given as absolute paths stay in the job folder: a key never picks a place
    outside the folders the artist chose).
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
    result = Downloaded(video)
    if not frames:
        return result
    job_plan = status.plan or read_plan(s3, job)  # the watcher read the plan already (a plan of another version: again)
    folder = job_folder or frames_folder(directory, job)
    names = deliveries.frame_names(job_plan)
    target = folder if output_root is None else deliveries.output_folder(job_plan, output_root)
    result.frames, skipped = download_keys(s3, job.bucket, frames_prefix(job.job_id), list(names), target, names)
    result.skipped += skipped
    prefix = outputs_prefix(job.job_id)
    keys = list_keys(s3, job.bucket, prefix)
    absolute = prefix + output_names.ABSOLUTE_DIR + "/"
    for selected, root in (
        ([key for key in keys if not key.startswith(absolute)], folder if output_root is None else output_root),
        ([key for key in keys if key.startswith(absolute)], folder),
    ):
        if selected:
            fetched, skipped = download_keys(s3, job.bucket, prefix, selected, root)
            result.outputs += fetched
            result.skipped += skipped
    return result


def read_plan(s3: Any, job: JobRef) -> Plan:
    return Plan.from_json(s3.get_object(Bucket=job.bucket, Key=plan_key(job.job_id))["Body"].read())


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]


def download_frames(s3: Any, bucket: str, job_id: str, target: Path) -> tuple[list[Path], list[SkippedKey]]:
    """Downloads every key under the job's frames prefix into ``target`` as stored, sub-folders kept; returns the
    skipped (the farm's own names: :func:`download_job` gives the scene's)."""
    prefix = frames_prefix(job_id)
    return download_keys(s3, bucket, prefix, list_keys(s3, bucket, prefix), target)


def download_keys(
    s3: Any, bucket: str, prefix: str, keys: list[str], target: Path, names: dict[str, str] | None = None
) -> tuple[list[Path], list[SkippedKey]]:
    """Downloads ``keys`` into ``target`` (named by ``names``, else by their path below ``prefix``), every local
    path checked by :mod:`.download_paths`; returns the files in key order and the skipped keys."""
    target.mkdir(parents=True, exist_ok=True)
    planned = download_paths.plan(target, prefix, keys, names=names)

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
