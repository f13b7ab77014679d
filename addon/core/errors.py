"""The one error vocabulary of Render on AWS.

Every failure a user can meet has a name here. The Lambda raises these classes, so the class name becomes the
Lambda ``errorType`` and the state machine's Catch turns it into a Fail state with that ``Error``; the worker
writes the same names into ``jobs/<jobId>/errors/``; the command line prints the name on the last line of
standard error; the Blender panel shows it. A name is never spelled twice: code compares against these classes.
"""

from __future__ import annotations


class RenderOnAwsError(Exception):
    """Base of every named error. ``name`` is what users and the state machine see."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self._name = name

    @property
    def name(self) -> str:
        return self._name or type(self).__name__

    def __str__(self) -> str:
        return self.message


class InvalidInput(RenderOnAwsError):
    """An execution-input field or a command-line argument is malformed."""


class InputOutsideBucket(RenderOnAwsError):
    """A URI points outside the stack's own bucket."""


class InputNotFound(RenderOnAwsError):
    """The .blend, the manifest or one of its files is not where the input says."""


class BlendFileUnreadable(RenderOnAwsError):
    """Not a .blend, or a corrupt, truncated or empty one."""


class NoFramesToRender(RenderOnAwsError):
    """The frame range selects no frame (end before start, step below 1, ...)."""


class NoCamera(RenderOnAwsError):
    """The scene has no active camera, so Blender cannot render it."""


class SceneNotFound(RenderOnAwsError):
    """The scene named in the input is not in the file."""


class RenderFailed(RenderOnAwsError):
    """Blender could not render a frame (deterministically: retrying will not help)."""


class MissingFrames(RenderOnAwsError):
    """Stitching found planned frames that were never rendered."""


class StitchFailed(RenderOnAwsError):
    """FFmpeg could not make the video."""


class MissingDependencies(RenderOnAwsError):
    """Files the scene uses (textures, libraries, caches) are missing on the artist's disk."""


class JobCancelled(RenderOnAwsError):
    """The job was cancelled by the artist."""


class StackNotFound(RenderOnAwsError):
    """The named stack (or the local cloud) does not exist or lacks the expected outputs."""


class ConnectionFailed(RenderOnAwsError):
    """The AWS endpoint or the local cloud cannot be reached, or credentials are missing."""


class UploadFailed(RenderOnAwsError):
    """An upload to the stack's bucket failed after retries."""


class CorruptFrame(RenderOnAwsError):
    """A frame image is not whole (truncated, bad checksum, wrong structure) or its S3 object does not match the
    digest the worker recorded. The worker re-renders such a frame; the stitch refuses to make a video from it."""


class NoSpace(RenderOnAwsError):
    """The worker's disk filled up (ENOSPC) while fetching, rendering or uploading: retried, on another host."""


class AccessDenied(RenderOnAwsError):
    """S3 refused the worker (AccessDenied / 403): the job role or the bucket policy is wrong; retrying won't help."""


ERRORS: dict[str, type[RenderOnAwsError]] = {
    cls.__name__: cls
    for cls in (
        InvalidInput,
        InputOutsideBucket,
        InputNotFound,
        BlendFileUnreadable,
        NoFramesToRender,
        NoCamera,
        SceneNotFound,
        RenderFailed,
        MissingFrames,
        StitchFailed,
        MissingDependencies,
        JobCancelled,
        StackNotFound,
        ConnectionFailed,
        UploadFailed,
        CorruptFrame,
        NoSpace,
        AccessDenied,
    )
}


def from_name(name: str, message: str) -> RenderOnAwsError:
    """Rebuild a named error from what an execution or a log reported; unknown names keep their text."""
    cls = ERRORS.get(name)
    return cls(message) if cls else RenderOnAwsError(message, name=name or "UnknownError")
