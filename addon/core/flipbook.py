"""The panel's flipbook, without bpy: which preview each frame shows, which previews to fetch first, playback.

The flipbook plays the whole shot at the scene's frame rate while it renders. A frame whose preview is not here
yet holds the nearest one that is (:func:`nearest_done`), so a flipbook of a few frames spread over the shot
already shows its motion; which previews to fetch next is chosen coarse to fine (:func:`fetch_order`), the same
idea as the workers' frame order, because the AWS call budget lets the panel fetch only a few each poll.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DEFAULT_FPS = 24.0


def nearest_done(frame: int, done: Sequence[int]) -> int | None:
    """The frame whose preview frame ``frame`` shows: itself when done, else the nearest done frame; on a tie the
    earlier one (the picture holds rather than jumps ahead). ``done`` is sorted; None when it is empty."""
    if not done:
        return None
    index = bisect.bisect_left(done, frame)
    if index < len(done) and done[index] == frame:
        return frame
    before = done[index - 1] if index > 0 else None
    after = done[index] if index < len(done) else None
    if before is None:
        return after
    if after is None:
        return before
    return before if frame - before <= after - frame else after


def _distance(frame: int, have: Sequence[int]) -> float:
    if not have:
        return float("inf")
    nearest = nearest_done(frame, have)
    return abs(frame - nearest) if nearest is not None else float("inf")


def fetch_order(candidates: Iterable[int], fetched: Iterable[int], limit: int) -> list[int]:
    """Up to ``limit`` of ``candidates`` to fetch next, coarse to fine: each time the candidate farthest from every
    preview already here (or chosen), the lowest frame on a tie, so each fetch best fills the flipbook's largest
    hold."""
    have = sorted(set(fetched))
    pool = sorted(set(candidates) - set(have))
    chosen: list[int] = []
    while pool and len(chosen) < limit:
        best = max(pool, key=lambda frame: (_distance(frame, have), -frame))
        chosen.append(best)
        bisect.insort(have, best)
        pool.remove(best)
    return chosen


@dataclass
class Flipbook:
    """Playback state of one job's flipbook (the add-on keeps one per job, on the main thread)."""

    planned: range
    """The shot's frames (start, end + 1, step): the flipbook plays all of them, done or not."""
    fps: float = DEFAULT_FPS
    done: list[int] = field(default_factory=list)
    """Frames whose preview is on disk, sorted."""
    position: int = 0
    """Index into :attr:`planned` of the frame on screen."""
    playing: bool = False

    def update(self, frames: Iterable[int]) -> None:
        """Takes the frames whose previews are on disk now (a snapshot's: it only grows)."""
        self.done = sorted(set(frames) & set(self.planned))

    @property
    def frame(self) -> int | None:
        return self.planned[self.position % len(self.planned)] if len(self.planned) else None

    @property
    def shown(self) -> int | None:
        """The frame whose preview is on screen for :attr:`frame`."""
        frame = self.frame
        return None if frame is None else nearest_done(frame, self.done)

    @property
    def interval(self) -> float:
        """Seconds a frame stays on screen: the scene's frame rate."""
        return 1.0 / self.fps if self.fps > 0 else 1.0 / DEFAULT_FPS

    def step(self) -> int | None:
        """Advances one frame (looping at the end of the shot); returns the frame whose preview to show."""
        if len(self.planned):
            self.position = (self.position + 1) % len(self.planned)
        return self.shown
