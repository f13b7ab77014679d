"""What a job is doing, as the command line and the Blender panel show it: one spelling for each phase."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PREPARING = "preparing"
    """The client finds and hashes the files the scene uses (no network yet)."""
    REATTACHING = "reattaching"
    """The add-on reconnects to a job it submitted before the file was reopened."""
    MISSING_FILES = "missing files"
    """Files the scene uses are missing: the artist decides whether to submit anyway."""
    UPLOADING = "uploading"
    COUNTING_FRAMES = "counting frames"
    """The execution runs the frame counter (or the client has not seen the plan yet)."""
    RENDERING = "rendering"
    STITCHING = "stitching"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED = "stopped"
    """The client stopped before submitting (the artist chose not to submit with missing files)."""


FINISHED_PHASES = frozenset({Phase.DONE, Phase.FAILED, Phase.CANCELLED, Phase.STOPPED})

EXECUTION_TERMINAL_STATES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
"""Step Functions execution states after which nothing changes."""
