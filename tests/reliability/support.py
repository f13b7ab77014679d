"""Helpers the drills share: executions started by hand, bucket snapshots, render counts, video-to-frame matching.

Everything here talks to a real local cloud over HTTP (boto3 against moto) or reads what the real worker wrote;
nothing is mocked, so what a drill proves is what the pipeline does.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from render_contract import ids

from localcloud.process import LocalCloudProcess

ROOT = Path(__file__).resolve().parents[2]
RENDERED = re.compile(r"^rendered frame (-?\d+)$", re.MULTILINE)
TO_RENDER = re.compile(r"^chunk (\d+): (\d+) frames \(.*\), (\d+) to render$", re.MULTILINE)
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
CANARY_KEY_ID = "AKIACANARY0RELIABLE1"
CANARY_SECRET = "canary-secret-3f9d1c0e-do-not-write-me-anywhere"
"""Fake credentials put in the environment of the drill cloud and of CLI runs: they must never be written down."""


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def new_job_id(tag: str) -> str:
    """An execution name the frame counter accepts as a job id (``layout.check_job_id``)."""
    return f"rel-{tag}-{uuid.uuid4().hex[:10]}"[:80]


def execution_arn(cloud: LocalCloudProcess, job_id: str) -> str:
    return ids.execution_arn(cloud.outputs["StateMachineArn"], job_id)


def start_execution(cloud: LocalCloudProcess, job_id: str, execution_input: dict[str, Any] | str) -> str:
    """StartExecution with a crafted input, as a hostile or buggy client could send it."""
    body = execution_input if isinstance(execution_input, str) else json.dumps(execution_input)
    response = cloud.client("stepfunctions").start_execution(
        stateMachineArn=cloud.outputs["StateMachineArn"], name=job_id, input=body
    )
    return response["executionArn"]


def wait_execution(cloud: LocalCloudProcess, arn: str, timeout: float = 300) -> dict[str, Any]:
    """DescribeExecution until the execution ends (the deadline only keeps a broken run from hanging the suite)."""
    sfn = cloud.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while True:
        described = sfn.describe_execution(executionArn=arn)
        if described["status"] in TERMINAL or time.monotonic() > deadline:
            return described
        time.sleep(0.3)


def wait_for(predicate: Any, timeout: float = 120, interval: float = 0.1) -> Any:
    """Polls ``predicate`` until it returns something truthy; returns that value, or the last falsy one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def bucket_keys(cloud: LocalCloudProcess) -> set[str]:
    s3 = cloud.client("s3")
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cloud.bucket):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def foreign_keys(new: set[str], job_ids: set[str]) -> list[str]:
    """New keys that are neither content-addressed uploads nor under one of ``job_ids``' own prefixes."""
    allowed = tuple(f"jobs/{job_id}/" for job_id in job_ids)
    return sorted(key for key in new if not key.startswith("cas/sha256/") and not key.startswith(allowed))


def put_cas(cloud: LocalCloudProcess, data: bytes) -> str:
    """Stores bytes as the client does (``cas/sha256/<hex>``) and returns their s3:// URI."""
    key = f"cas/sha256/{hashlib.sha256(data).hexdigest()}"
    cloud.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=data)
    return f"s3://{cloud.bucket}/{key}"


def read_object(cloud: LocalCloudProcess, key: str) -> bytes:
    return cloud.client("s3").get_object(Bucket=cloud.bucket, Key=key)["Body"].read()


def bpy_edit(path: Path, code: str, out: Path | None = None) -> Path:
    """Opens ``path`` in real Blender (its own process: bpy is global state), runs ``code`` with ``bpy`` and
    ``scene`` defined, and saves to ``out`` (default: in place)."""
    script = (
        "import bpy, sys\n"
        "bpy.ops.wm.open_mainfile(filepath=sys.argv[1])\n"
        "scene = bpy.context.scene\n"
        f"{code}\n"
        "bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])\n"
    )
    target = out or path
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(target)], check=True, capture_output=True, cwd=ROOT, timeout=120
    )
    return target


# ---- the worker's logs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    """One Batch attempt of one job as the local executor logged it (``batch/<job>/attempt-N.log``)."""

    batch_job: str
    number: int
    text: str

    @property
    def rendered(self) -> list[int]:
        return [int(frame) for frame in RENDERED.findall(self.text)]

    @property
    def planned(self) -> tuple[int, int, int] | None:
        """(chunk, frames in the chunk, frames this attempt set out to render), from the worker's own line."""
        match = TO_RENDER.search(self.text)
        return (int(match[1]), int(match[2]), int(match[3])) if match else None


def job_attempts(cloud: LocalCloudProcess, job_id: str, action: str = "render") -> list[Attempt]:
    """Every attempt of every Batch job (array children included) that ran ``action`` for ``job_id``."""
    attempts = []
    for path in sorted(cloud.state_dir.glob("batch/*/attempt-*.log")):
        text = path.read_text(errors="replace")
        first = text.split("\n", 1)[0]
        if f"render-worker {action}:" in first and f"/jobs/{job_id} " in first + " ":
            attempts.append(Attempt(path.parent.name, int(path.stem.split("-")[1]), text))
    return attempts


def render_counts(attempts: list[Attempt]) -> Counter[int]:
    """How many times each frame was rendered and uploaded, across all attempts."""
    return Counter(frame for attempt in attempts for frame in attempt.rendered)


# ---- worker processes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Worker:
    process: psutil.Process
    batch_job: str
    index: int | None
    attempt: int

    @property
    def log(self) -> str:
        return self.batch_job.replace(":", "_")


def workers(cloud: LocalCloudProcess, job_id: str | None = None) -> list[Worker]:
    """The worker processes the cloud runs now (zombies not counted), optionally only those of ``job_id``."""
    found = []
    for child in psutil.Process(cloud.process.pid).children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE or "render_worker.cli" not in " ".join(child.cmdline()):
                continue
            if job_id is not None and f"/jobs/{job_id}" not in " ".join(child.cmdline()):
                continue
            environ = child.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        index = environ.get("AWS_BATCH_JOB_ARRAY_INDEX")
        found.append(
            Worker(
                child,
                environ.get("AWS_BATCH_JOB_ID", ""),
                int(index) if index is not None else None,
                int(environ.get("AWS_BATCH_JOB_ATTEMPT", "1")),
            )
        )
    return found


# ---- video against frames ------------------------------------------------------------------------------------
def decode_video(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]


def decode_image(data: bytes, tmp: Path) -> np.ndarray:
    import av

    tmp.write_bytes(data)
    with av.open(str(tmp)) as container:
        return next(container.decode(container.streams.video[0])).to_ndarray(format="rgb24")


def match_video_to_frames(video: list[np.ndarray], frames: list[np.ndarray]) -> list[tuple[int, float]]:
    """For each video frame, the index of the nearest rendered frame (mean absolute difference) and its distance.

    A video with every frame once and in order maps i -> i for every i; a duplicate, a gap or a swap breaks it.
    """
    stack = np.stack([frame.astype(np.int16) for frame in frames])
    matches = []
    for picture in video:
        distances = np.abs(stack - picture.astype(np.int16)).mean(axis=(1, 2, 3))
        best = int(np.argmin(distances))
        matches.append((best, float(distances[best])))
    return matches


def job_frames(cloud: LocalCloudProcess, job_id: str, tmp: Path) -> dict[int, np.ndarray]:
    """Every frame PNG of the job in S3, decoded, by frame number."""
    frames = {}
    for key in sorted(k for k in bucket_keys(cloud) if k.startswith(f"jobs/{job_id}/frames/")):
        number = int(key.rsplit("/", 1)[-1].split(".")[0])
        frames[number] = decode_image(read_object(cloud, key), tmp / f"frame-{number}.png")
    return frames
