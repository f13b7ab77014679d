"""Graceful stop: SIGTERM (a Spot interruption notice, a Batch TerminateJob, the local cloud's stop) or SIGINT.

Blender cannot be interrupted inside a frame from Python, and should not be: the handler only raises a flag.
Python runs it as soon as the render call returns, the worker then uploads that frame and the ones still
queued, and exits 75 (interrupted), so the retry renders only what is missing. Batch sends SIGKILL 30 s after
SIGTERM by default; a frame that had not finished by then is simply rendered again on the next attempt.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from render_contract.errors import Interrupted

log = logging.getLogger("render_worker")
STOP = threading.Event()
__all__ = ["STOP", "Interrupted", "check", "install"]


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if not STOP.is_set():
        log.info("received %s: finishing the frame in flight and its upload, then exiting", signal.Signals(signum).name)
    STOP.set()


def install() -> None:
    """Installs the handlers (main thread only, as Python requires)."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def check() -> None:
    """Raises :class:`Interrupted` once a stop was requested; called between units of work."""
    if STOP.is_set():
        raise Interrupted("stopped by signal")
