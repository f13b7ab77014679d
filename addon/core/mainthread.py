"""Handing work from background threads to Blender's main thread, which alone may touch bpy data."""

from __future__ import annotations

import queue
import time
import traceback
from collections.abc import Callable
from typing import Any


class MainThreadQueue:
    """Callables handed from background threads to the main thread, run when the main thread drains."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.SimpleQueue()

    def call(self, function: Callable[..., None], *args: Any) -> None:
        self._queue.put((function, args))

    def drain(self, max_seconds: float = 0.005) -> int:
        """Runs queued calls until none is left or ``max_seconds`` passed (the rest waits for the next tick)."""
        deadline = time.perf_counter() + max_seconds
        count = 0
        while True:
            try:
                function, args = self._queue.get_nowait()
            except queue.Empty:
                return count
            try:
                function(*args)
            except Exception:  # one bad update must not stop the timer that serves every job
                traceback.print_exc()
            count += 1
            if time.perf_counter() > deadline:
                return count
