"""The one error vocabulary of Render on AWS: every failure a user can meet has a name, a meaning, an exit code.

A name is spelled once, here, as a class. The Lambda raises these classes, so the class name becomes the Lambda
``errorType`` and the state machine's Catch turns it into the execution's ``error``. The worker writes the same
names into ``jobs/<jobId>/errors/`` and exits with the error's :attr:`~RenderOnAwsError.exit_code`; after a
failed Batch step the state machine asks the Lambda to explain the failure, which re-raises the worker's own error
(``NoCamera``, ``MissingFrames``, ...), so the execution, the command line and the Blender panel all show the
worker's name, not a generic one. Code compares against the classes, never against string literals.

``retryable`` says whether Batch should try the same work again (on another host): the worker then exits with
:data:`~render_contract.exitcodes.EXIT_INTERRUPTED`, which the job definitions' retry strategy retries.
"""

from __future__ import annotations

import json
from typing import ClassVar

from .exitcodes import EXIT_FAILED, EXIT_INTERRUPTED


class RenderOnAwsError(Exception):
    """Base of every named error. ``name`` is what users and the state machine see."""

    exit_code: ClassVar[int] = EXIT_FAILED
    """What the worker exits with when this error ends an attempt."""
    retryable: ClassVar[bool] = False
    """True when another attempt (another host, later) may succeed."""

    def __init__(self, message: str, name: str | None = None, frame: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self._name = name
        self.frame = frame
        """The frame being worked on when it happened, if any."""

    @property
    def name(self) -> str:
        return self._name or type(self).__name__

    def __str__(self) -> str:
        return self.message


class InvalidInput(RenderOnAwsError):
    """An execution-input field, a manifest or a command-line argument is malformed."""


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


class FramesFailed(RenderOnAwsError):
    """Some frames failed for good (a render error, out of memory, the per-frame time limit) while the others of
    their chunks rendered: the job ends without a video, the cause lists every failed frame and why, and a resume
    renders just those frames (and any still missing)."""


class FrameTimedOut(RenderOnAwsError):
    """One frame rendered longer than the per-frame time limit (``RENDER_FRAME_TIMEOUT``); a cause of
    :class:`FramesFailed`."""


class MissingFrames(RenderOnAwsError):
    """Stitching found planned frames that were never rendered."""


class StitchFailed(RenderOnAwsError):
    """FFmpeg could not make the video."""


class EncoderMissing(RenderOnAwsError):
    """The scene's movie settings ask for a codec the worker's FFmpeg cannot encode (e.g. H.265 without libx265):
    the message names the codec, the encoders tried and what to choose instead. Retrying on the same image won't
    help; the frames stay in S3."""


class MissingDependencies(RenderOnAwsError):
    """Files the scene uses (textures, libraries, caches) are missing on the artist's disk."""


class JobCancelled(RenderOnAwsError):
    """The job was cancelled by the artist."""


class CancelFailed(RenderOnAwsError):
    """Step Functions refused to stop the job (it may have ended already, or the caller may not stop it)."""


class StackNotFound(RenderOnAwsError):
    """The named stack (or the local cloud) does not exist or lacks the expected outputs."""


class ConnectionFailed(RenderOnAwsError):
    """The AWS endpoint or the local cloud cannot be reached, or credentials are missing."""

    retryable = True


class UploadFailed(RenderOnAwsError):
    """An upload to the stack's bucket failed after retries."""

    retryable = True


class CorruptStoredFile(RenderOnAwsError):
    """A warning: a content-addressed key held other bytes than its hash names; the file was uploaded over it."""


class UnsafeDownloadKey(RenderOnAwsError):
    """A warning: an output key would not be a safe local file name inside the download folder; it was skipped."""


class CorruptFrame(RenderOnAwsError):
    """A frame image is not whole (truncated, bad checksum, wrong structure) or its S3 object does not match the
    digest the worker recorded. The worker renders such a frame again; the stitch refuses to make a video of it."""

    exit_code = EXIT_INTERRUPTED
    retryable = True


class NoSpace(RenderOnAwsError):
    """The worker's disk filled up (ENOSPC) while fetching, rendering or uploading: retried, on another host."""

    exit_code = EXIT_INTERRUPTED
    retryable = True


class AccessDenied(RenderOnAwsError):
    """S3 refused the worker (AccessDenied / 403): the job role or the bucket policy is wrong; retrying won't help."""


class PythonNotRun(RenderOnAwsError):
    """A warning: the file has registered scripts or Python drivers, which the farm runs only when the job allows
    scripts; without them it renders differently from the artist's Blender."""


class BlenderTooNew(RenderOnAwsError):
    """The file was saved by a Blender series newer than every runtime the farm has: refused before any Batch job,
    since an older Blender may open it wrongly."""


class UnknownRuntime(RenderOnAwsError):
    """The job asked for a Blender runtime (``blenderRuntime``, ``--blender``) the farm does not have."""


class RuntimeMissing(RenderOnAwsError):
    """The worker has no environment for the Blender runtime the plan names (a worker image older than the frame
    counter, or a failed install on the local cloud): rebuild the worker image; retrying won't help."""


class OtherBlenderRuntime(RenderOnAwsError):
    """A warning: the job renders with another Blender series than the one that saved the file (the farm lacks that
    series, or the job asked for another), so its frames may differ from the file's own Blender."""


class BlenderVersionMismatch(RenderOnAwsError):
    """A warning: the artist's Blender is another series than the one that last saved the submitted file."""


class UnbakedSimulation(RenderOnAwsError):
    """A warning: a simulation of the rendered scene (a point cache of cloth, soft body, particles, dynamic paint or
    rigid bodies, a fluid domain, a Geometry Nodes simulation zone) is not baked. Chunks start mid-shot in a fresh
    Blender, so it renders as if it started at each chunk's first frame; bake it before submitting."""


class Interrupted(RenderOnAwsError):
    """The attempt was stopped (SIGTERM: a Spot notice, a Batch stop) or met a transient AWS error."""

    exit_code = EXIT_INTERRUPTED
    retryable = True


BATCH_CAPACITY_REASON = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"
"""AWS Batch's reason for a RUNNABLE job that no compute environment can place for want of instances, and the
reason the stack's queue names in its jobStateTimeLimitActions to cancel such a job after CapacityWaitSeconds.
A job's statusReason starting with ``CAPACITY:`` (Batch's prefix for capacity reasons) is capacity trouble."""
BATCH_CAPACITY_PREFIX = "CAPACITY:"


class NoCapacity(RenderOnAwsError):
    """No instance could be had for a render or stitch job (no Spot or GPU capacity in any of the queue's compute
    environments) within the admin's limit (the stack's CapacityWaitSeconds): Batch cancelled the waiting job.
    Submitting later, allowing more instance types or the On-Demand fallback helps; the file is fine."""


class WorkerImageBuildFailed(RenderOnAwsError):
    """Deploying the stack could not build or find the worker image (CodeBuild failed, or the image is not in the
    stack's repository afterwards); the deploy stops before any job could run without an image."""


class UnexpectedError(RenderOnAwsError):
    """A failure with no name of its own (a bug): the message says what happened."""


def _vocabulary() -> dict[str, type[RenderOnAwsError]]:
    found: dict[str, type[RenderOnAwsError]] = {}
    pending = list(RenderOnAwsError.__subclasses__())
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return dict(sorted(found.items()))


ERRORS: dict[str, type[RenderOnAwsError]] = _vocabulary()
"""Every named error, by name."""


def from_name(name: str | None, message: str, frame: int | None = None) -> RenderOnAwsError:
    """Rebuild a named error from what an execution, a log or an error record reported.

    An unknown name keeps its text (a newer worker may know names this client does not)."""
    cls = ERRORS.get(name or "")
    if cls is not None:
        return cls(message, frame=frame)
    return RenderOnAwsError(message, name=name or UnexpectedError.__name__, frame=frame)


def readable_cause(cause: str | None) -> str:
    """The human part of an execution's cause: a Lambda error's message, a Batch job's status reason."""
    if not cause:
        return "no cause given"
    try:
        described = json.loads(cause)
    except ValueError:
        return cause
    if not isinstance(described, dict):
        return cause
    for key in ("errorMessage", "StatusReason", "statusReason"):
        if described.get(key):
            return str(described[key])
    return cause
