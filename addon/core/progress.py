"""Progress text shared by the command line and the Blender panel: the same words and the same ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from render_contract.phases import Phase

from .following import JobStatus


@dataclass
class EtaEstimator:
    """Estimates the time left from the frame rate seen since the first frame appeared."""

    clock: object = time.monotonic
    _first: tuple[float, int] | None = field(default=None, init=False)

    def update(self, done: int, total: int | None) -> float | None:
        now = self.clock()  # type: ignore[operator]
        if total is None or done <= 0:
            return None
        if self._first is None:
            self._first = (now, done)
            return None
        start, start_done = self._first
        rendered = done - start_done
        if rendered <= 0 or now <= start:
            return None
        return (total - done) * (now - start) / rendered


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def describe(status: JobStatus, eta: float | None = None) -> str:
    """One line: ``rendering 12/48 frames, longest gap 3 frames, ETA 0:31``, or ``waiting for capacity (4 min): ...``
    while the job's Batch job waits for an instance."""
    if status.waiting_for_capacity is not None and not status.finished:
        done = f"{status.frames_done}/{status.frames_total} frames, " if status.frames_done else ""
        return f"{done}{status.waiting_for_capacity.describe()}"
    if status.phase == Phase.RENDERING and status.frames_total:
        gap = "" if status.longest_gap is None else f", longest gap {status.longest_gap} frames"
        return f"rendering {status.frames_done}/{status.frames_total} frames{gap}, ETA {format_duration(eta)}"
    if status.phase == Phase.FAILED:
        return f"failed: {status.error}: {status.cause}"
    return status.phase


def bar(done: int, total: int | None, width: int = 30) -> str:
    if not total:
        return "[" + " " * width + "]"
    filled = min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"
