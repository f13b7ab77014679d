"""Where things live in the stack's bucket: the S3 layout contract of ARCHITECTURE.md, written once.

``cas/sha256/<hex>``              immutable uploads, keyed by content
``jobs/<jobId>/manifest.json``    relative path -> hash, and the main file
``jobs/<jobId>/job.json``         the plan
``jobs/<jobId>/frames/<frame>.<ext>``
``jobs/<jobId>/errors/<name>.json``
``jobs/<jobId>/<jobName>.mp4``
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .errors import InvalidInput

CAS_PREFIX = "cas/sha256/"
JOBS_PREFIX = "jobs/"
FRAME_DIGITS = 6
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise InvalidInput(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise InvalidInput(f"no bucket in URI: {uri!r}")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, name: str) -> S3Uri:
        return S3Uri(self.bucket, f"{self.key.rstrip('/')}/{name}" if self.key else name)


def safe_name(name: str, limit: int = 64) -> str:
    """A job name made safe for an S3 key, a Batch job name and a file name.

    Keeps letters, digits, '.', '_' and '-' (accents folded to ASCII), turns every other run into '_', never
    starts with '.' (so no '..'), and is never empty. Batch job names allow 128 characters; keys stay short.
    """
    folded = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    cleaned = _SAFE_NAME.sub("_", folded).strip("._-")[:limit].strip("._-")
    return cleaned or "render"


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidInput(f"invalid job id: {job_id!r}")
    return job_id


def check_sha256(hex_digest: str) -> str:
    if not isinstance(hex_digest, str) or not _HEX.match(hex_digest):
        raise InvalidInput(f"invalid sha256 digest: {hex_digest!r}")
    return hex_digest


def cas_key(hex_digest: str) -> str:
    return CAS_PREFIX + check_sha256(hex_digest)


def job_prefix(job_id: str) -> str:
    return f"{JOBS_PREFIX}{check_job_id(job_id)}/"


def manifest_key(job_id: str) -> str:
    return job_prefix(job_id) + "manifest.json"


def plan_key(job_id: str) -> str:
    return job_prefix(job_id) + "job.json"


def frames_prefix(job_id: str) -> str:
    return job_prefix(job_id) + "frames/"


def frame_key(job_id: str, frame: int, extension: str) -> str:
    return f"{frames_prefix(job_id)}{frame:0{FRAME_DIGITS}d}.{extension}"


def frame_from_key(key: str) -> int | None:
    """The frame number of a frame key, or None for anything else under the prefix."""
    stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def errors_prefix(job_id: str) -> str:
    return job_prefix(job_id) + "errors/"


def video_key(job_id: str, job_name: str) -> str:
    return f"{job_prefix(job_id)}{safe_name(job_name)}.mp4"


def job_id_from_output(output_key: str) -> str | None:
    """The job id of an output key ``jobs/<jobId>`` (trailing slash allowed), else None."""
    parts = output_key.strip("/").split("/")
    if len(parts) == 2 and parts[0] == JOBS_PREFIX.rstrip("/") and _JOB_ID.match(parts[1]):
        return parts[1]
    return None
