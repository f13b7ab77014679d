"""Job ids, execution names and execution ARNs.

A job's first Step Functions execution is *named by the job id*, so the job's data lives under ``jobs/<jobId>/``
(two submissions never share a key) and the execution's ARN follows from the state machine's. A resumed job runs
again as ``<jobId>--r<N>`` (run N >= 2) over the same ``jobs/<jobId>/``: the job id is always the execution name
without that suffix. Job ids are made here and only here, for the client's submissions and the seed's payloads.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from .errors import InvalidInput
from .names import safe_name

JOB_ID_LIMIT = 80
"""Step Functions execution names hold at most 80 characters."""
RUN_MARK = "--r"
MAX_RUNS = 9999
_RUN_SUFFIX = len(f"{RUN_MARK}{MAX_RUNS}")
_RUN = re.compile(rf"^(?P<job>.+){re.escape(RUN_MARK)}(?P<run>[2-9]|[1-9][0-9]{{1,3}})$")
_JOB_ID = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{JOB_ID_LIMIT - 1}}}$")
_NAME_PART = 40
_SAFE = re.compile(r"[^A-Za-z0-9]+")
_ARTIST = re.compile(r"^[A-Za-z0-9]{1,32}$")
ARTIST_TAG = "render-artist"
"""The IAM principal tag whose value prefixes an artist's job ids: template.yaml's ArtistPolicy lets an artist
write manifests under ``jobs/<tag>-*`` and stop executions named ``<tag>-*`` only."""
_SUFFIX_LENGTH = len("-20261204-101010-abcdef")


def check_job_id(job_id: object) -> str:
    """A job id is a valid execution name and a single, harmless S3 key segment, or ``InvalidInput``."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidInput(f"invalid job id: {job_id!r:.100}")
    return job_id


def is_job_id(text: str) -> bool:
    return bool(_JOB_ID.match(text))


def check_artist(artist: object) -> str:
    """An artist tag is 1 to 32 letters or digits: no '-' (``ann`` must not match ``ann-b``'s jobs), no '/'."""
    if not isinstance(artist, str) or not _ARTIST.match(artist):
        raise InvalidInput(f"the artist tag must be 1 to 32 letters or digits, got {artist!r:.40}")
    return artist


def new_job_id(job_name: str, now: datetime | None = None, artist: str | None = None) -> str:
    """Unique per submission and readable in the console: ``[<artist>-]<name>-<UTC time>-<random>``.

    With an artist tag (the value of the artist's ``render-artist`` IAM tag) the id starts with it, which is what
    the stack's artist policy lets that artist write and stop; the name part shrinks so the id fits 80 characters.
    """
    owner = f"{check_artist(artist)}-" if artist else ""
    room = min(_NAME_PART, JOB_ID_LIMIT - _RUN_SUFFIX - _SUFFIX_LENGTH - len(owner))
    stem = _SAFE.sub("_", safe_name(job_name, room)).strip("_")[:room] or "render"
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return check_job_id(f"{owner}{stem}-{stamp}-{uuid.uuid4().hex[:6]}")


def execution_name(job_id: str, run: int = 1) -> str:
    """The name of a job's ``run``-th execution: the job id, then ``<jobId>--r<run>`` for each resume."""
    check_job_id(job_id)
    if run == 1:
        return job_id
    if not 2 <= run <= MAX_RUNS:
        raise InvalidInput(f"a job runs 1 to {MAX_RUNS} times, not {run}")
    name = f"{job_id}{RUN_MARK}{run}"
    if len(name) > JOB_ID_LIMIT:
        raise InvalidInput(f"job id {job_id!r} is too long to be resumed")
    return name


def split_execution_name(name: object) -> tuple[str, int]:
    """(job id, run) of an execution name."""
    checked = check_job_id(name)
    match = _RUN.match(checked)
    if match:
        return check_job_id(match["job"]), int(match["run"])
    return checked, 1


def execution_arn(state_machine_arn: str, job_id: str, run: int = 1) -> str:
    """``arn:aws:states:R:A:stateMachine:M`` + job id -> ``arn:aws:states:R:A:execution:M:<execution name>``."""
    parts = state_machine_arn.split(":")
    if len(parts) != 7 or parts[:3] != ["arn", parts[1], "states"] or parts[5] != "stateMachine" or not parts[6]:
        raise InvalidInput(f"not a state machine ARN: {state_machine_arn!r}")
    return ":".join([*parts[:5], "execution", parts[6], execution_name(job_id, run)])


def execution_of(execution_arn_text: str) -> tuple[str, int]:
    """(job id, run) of an execution ARN."""
    parts = execution_arn_text.split(":")
    if len(parts) != 8 or parts[2] != "states" or parts[5] != "execution":
        raise InvalidInput(f"not an execution ARN: {execution_arn_text!r}")
    return split_execution_name(parts[7])


def job_id_of(execution_arn_text: str) -> str:
    """The job id of an execution ARN (its name, less a resume's ``--r<N>``)."""
    return execution_of(execution_arn_text)[0]
