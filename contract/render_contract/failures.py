"""Frames that failed for good, one record each at ``jobs/<jobId>/failed/<frame>.json``.

Why records per frame: a frame that cannot be rendered (a render error, out of memory, the per-frame time limit)
must not cost the chunk's other frames, so the worker records it and goes on; at the end of the render step the
state machine's explain step reads every record, of every chunk, and ends the job with
:class:`~render_contract.errors.FramesFailed`, whose cause is :func:`describe`. A resume renders the frame again
and deletes its record when it succeeds. ``batch_job`` names the Batch job (the array parent) whose attempt wrote
the record: a Batch *retry* of that job (after a Spot loss) does not try the frame again, a resume (a new Batch
job) does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from .errors import InvalidInput

MAX_CAUSE_CHARS = 4000
"""The cause stays readable (Step Functions allows 32,768 characters; the panel shows one line)."""


@dataclass(frozen=True)
class FrameFailure:
    frame: int
    error: str
    """The per-frame error's name: ``RenderFailed``, ``FrameTimedOut``."""
    message: str
    """One line, without the ``frame N:`` prefix (the frame is :attr:`frame`)."""
    batch_job: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, body: bytes | str) -> FrameFailure:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise InvalidInput(f"a failed-frame record is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("frame"), int) or isinstance(data["frame"], bool):
            raise InvalidInput(f"a failed-frame record has no frame number: {str(data)[:200]}")
        return cls(
            frame=data["frame"],
            error=str(data.get("error") or "RenderFailed")[:64],
            message=without_frame_prefix(str(data.get("message") or "no message"), data["frame"])[:1000],
            batch_job=str(data.get("batch_job") or "")[:200],
        )


def without_frame_prefix(message: str, frame: int) -> str:
    prefix = f"frame {frame}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def frame_list(frames: Iterable[int], limit: int = 40) -> str:
    """``"3, 7-9, 12"``: sorted, consecutive numbers as ranges, at most ``limit`` items then ``(N frames)``."""
    ordered = sorted(set(frames))
    runs: list[tuple[int, int]] = []
    for frame in ordered:
        if runs and frame == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], frame)
        else:
            runs.append((frame, frame))
    items = [str(a) if a == b else f"{a}-{b}" for a, b in runs]
    text = ", ".join(items[:limit])
    return text + (f", ... ({len(ordered)} frames)" if len(items) > limit else "")


def describe(failures: Sequence[FrameFailure], not_rendered: Iterable[int] = ()) -> str:
    """The cause of ``FramesFailed``: which frames, then each distinct cause with its frames.

    ``"2 frame(s) failed: 3, 7. RenderFailed on 3, 7: Error: Image too small"``; frames that are missing for
    another reason (their chunk never finished) are named last, since a resume renders them too."""
    by_cause: dict[tuple[str, str], list[int]] = {}
    for failure in sorted(failures, key=lambda item: item.frame):
        by_cause.setdefault((failure.error, failure.message), []).append(failure.frame)
    frames = [failure.frame for failure in failures]
    parts = [f"{len(set(frames))} frame(s) failed: {frame_list(frames)}."]
    causes = [f"{name} on {frame_list(group, limit=10)}: {message}" for (name, message), group in by_cause.items()]
    parts.append("; ".join(causes))
    missing = sorted(set(not_rendered) - set(frames))
    if missing:
        parts[-1] += "."
        parts.append(f"{len(missing)} other frame(s) were not rendered: {frame_list(missing)}.")
    text = " ".join(parts)
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 3] + "..."
