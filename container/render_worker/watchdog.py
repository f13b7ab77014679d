"""The per-frame time limit (``RENDER_FRAME_TIMEOUT``, seconds; unset or 0: none).

Blender cannot be interrupted inside a frame from Python, so a frame that renders past the limit is ended the only
way there is: the watchdog (a timer thread) records the frame as failed (``FrameTimedOut`` in ``failed/``), lets
the uploads in flight finish, and starts the worker afresh in the same process (``exec``: same container, same
Batch attempt, no Batch retry spent). The fresh worker skips the frame, since this Batch job recorded it, and goes
on with the chunk's other frames; the chunk then ends ``FramesFailed`` naming it. Only when the record cannot be
written does the attempt end with exit 75 instead (Batch retries it, and the retry meets the frame again).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from render_contract.exitcodes import EXIT_INTERRUPTED

log = logging.getLogger("render_worker")
ENV = "RENDER_FRAME_TIMEOUT"


def frame_time_limit() -> float | None:
    """The limit in seconds, or None; a value that is not a positive number is logged and ignored."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        limit = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r (not a number of seconds): no per-frame time limit", ENV, raw)
        return None
    return limit if limit > 0 else None


class FrameWatchdog:
    """Arms a timer around each frame's render; ``on_expire(frame)`` runs in the timer's thread if it fires."""

    def __init__(self, limit: float | None, on_expire: Callable[[int], None]) -> None:
        self.limit = limit
        self.on_expire = on_expire

    @contextmanager
    def watch(self, frame: int) -> Iterator[None]:
        """Runs the body under the limit. A lock settles a frame that ends just as the timer fires: either the
        body's end wins (the timer does nothing) or the timer wins and the body never gets past its end (the
        process is replaced)."""
        if self.limit is None:
            yield
            return
        lock = threading.Lock()
        ended = threading.Event()

        def expire() -> None:
            with lock:
                if not ended.is_set():
                    self.on_expire(frame)

        timer = threading.Timer(self.limit, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            with lock:
                ended.set()


def restart_worker() -> None:
    """Replaces this process with a fresh run of the same command line (never returns); exit 75 if it cannot."""
    for handler in log.handlers:
        handler.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError as exc:
        log.error("could not restart the worker (%s): exiting %d so Batch retries", exc, EXIT_INTERRUPTED)
    os._exit(EXIT_INTERRUPTED)
