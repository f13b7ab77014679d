"""The state machine's execution input: the one parser and the one writer of it.

The client writes it with :meth:`ExecutionInput.to_dict`; the frame counter Lambda parses it with
:func:`parse` (trusting none of it). It stays compatible with the AWS workshop's ``start-execution`` payload::

    {"jobName": "Pottery", "inputUri": "s3://BUCKET/...blend", "outputUri": "s3://BUCKET/...",
     "framesPerJob": "1" | "auto", "jobDefinitionArn": "...", "jobQueueArn": "...",
     "manifestUri": "s3://BUCKET/jobs/<jobId>/manifest.json", "scene": "Scene",
     "frameStart": 1, "frameEnd": 250, "frameStep": 1}

Rules:

* The input is a JSON object, else ``InvalidInput``. Unknown fields are ignored (and reported in
  :attr:`ExecutionInput.unknown_fields` for the caller to log), so an older Lambda accepts a newer client's input;
  known fields are checked strictly. ``null`` means absent, i.e. the default.
* ``inputUri`` or ``manifestUri`` is required; with both, the manifest wins. Every URI (input, manifest, output) is
  an ``s3://`` URI inside the stack's bucket, else ``InputOutsideBucket`` (a malformed one is ``InvalidInput``).
  ``outputUri`` is only checked: a job's data always lives under ``jobs/<jobId>/``.
* ``jobDefinitionArn`` / ``jobQueueArn`` are accepted only when they name the stack's own: they can never redirect
  work (the state machine uses its own ARNs regardless).
* Integers (``frameStart``, ``frameEnd``, ``frameStep``, ``framesPerJob``) may be JSON integers, integral floats or
  decimal strings; booleans, fractions and words are ``InvalidInput``.
* ``framesPerJob``: ``"auto"`` (the default, see :func:`.plan.auto_frames_per_job`) or 1 to
  :data:`MAX_FRAMES_PER_JOB`.
* ``jobName``: a display name, cleaned by :func:`.names.clean_display_name` (128 characters); keys use its
  :func:`.names.safe_name`, never the raw name.
* ``scene``: a scene name of 1 to :data:`SCENE_NAME_LIMIT` characters; absent means the file's active scene.
* ``allowScripts``: ``true`` lets the file's Python (registered scripts, Python drivers) run on the farm for this
  job, with the worker's role; default ``false`` (Blender's auto-execution stays off).
* ``blenderVersion``: the artist's Blender (``bpy.app.version`` as ``"4.2.3"`` or ``[4, 2, 3]``), checked against
  the file's header; ``blenderRuntime``: an override, a series of :data:`.runtimes.RUNTIMES` (``"4.5"``). Both
  optional; the rule that uses them is :func:`.runtimes.choose`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import InputOutsideBucket, InvalidInput
from .layout import MAX_KEY_BYTES, S3Uri, job_uri, manifest_key
from .names import clean_display_name
from .plan import MAX_FRAMES
from .runtimes import parse_version, resolve_override, spell

MAX_FRAMES_PER_JOB = MAX_FRAMES
SCENE_NAME_LIMIT = 255
AUTO = "auto"
MAX_INPUT_BYTES = 262_144
"""Step Functions refuses an execution input larger than 262,144 bytes of UTF-8 (256 KiB)."""
_INTEGER = re.compile(r"^[+-]?[0-9]{1,12}$")


@dataclass(frozen=True)
class ExecutionInput:
    """The execution input, every field typed; ``None`` means "not given" (the file's own value, or auto)."""

    blend: S3Uri | None = None
    manifest: S3Uri | None = None
    output: S3Uri | None = None
    job_name: str | None = None
    scene: str | None = None
    frame_start: int | None = None
    frame_end: int | None = None
    frame_step: int | None = None
    frames_per_job: int | None = None
    """None means ``"auto"``."""
    job_definition_arn: str | None = None
    job_queue_arn: str | None = None
    allow_scripts: bool = False
    """The artist's consent to run the file's Python on the farm for this job (auto-execution is off otherwise)."""
    blender_version: str | None = None
    """The artist's Blender (``"4.2.3"``), as the add-on read ``bpy.app.version``."""
    blender_runtime: str | None = None
    """A runtime series the artist asked for (``"4.5"``), overriding the file's own."""
    unknown_fields: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def for_job(cls, bucket: str, job_id: str, **fields: Any) -> ExecutionInput:
        """The client's input for a job whose manifest is at ``jobs/<jobId>/manifest.json``."""
        return cls(manifest=S3Uri(bucket, manifest_key(job_id)), output=S3Uri.parse(job_uri(bucket, job_id)), **fields)

    @property
    def source(self) -> S3Uri:
        """What the frame counter reads: the manifest if given, else the .blend."""
        source = self.manifest or self.blend
        if source is None:
            raise InvalidInput("the input needs 'inputUri' (a .blend in the stack's bucket) or 'manifestUri'")
        return source

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "jobName": self.job_name,
            "inputUri": str(self.blend) if self.blend else None,
            "manifestUri": str(self.manifest) if self.manifest else None,
            "outputUri": str(self.output) if self.output else None,
            "framesPerJob": AUTO if self.frames_per_job is None else str(self.frames_per_job),
            "scene": self.scene,
            "frameStart": self.frame_start,
            "frameEnd": self.frame_end,
            "frameStep": self.frame_step,
            "jobDefinitionArn": self.job_definition_arn,
            "jobQueueArn": self.job_queue_arn,
            "allowScripts": True if self.allow_scripts else None,
            "blenderVersion": self.blender_version,
            "blenderRuntime": self.blender_runtime,
        }
        return {name: value for name, value in values.items() if value is not None}


KNOWN_FIELDS = frozenset(
    {"jobName", "inputUri", "manifestUri", "outputUri", "framesPerJob", "scene", "frameStart", "frameEnd"}
    | {"frameStep", "jobDefinitionArn", "jobQueueArn", "allowScripts", "blenderVersion", "blenderRuntime"}
)


def parse(
    data: Any,
    bucket: str,
    job_definition_arns: frozenset[str] = frozenset(),
    job_queue_arns: frozenset[str] = frozenset(),
) -> ExecutionInput:
    """Validate every field of an execution input against the stack (its bucket and its own ARNs)."""
    if not isinstance(data, dict):
        raise InvalidInput(f"the execution input must be a JSON object, not {type(data).__name__}")
    unknown = tuple(sorted(str(name)[:64] for name in data if name not in KNOWN_FIELDS))

    blend = _uri(data, "inputUri", bucket)
    manifest = _uri(data, "manifestUri", bucket)
    output = _uri(data, "outputUri", bucket, is_object=False)
    if blend is None and manifest is None:
        raise InvalidInput("the input needs 'inputUri' (a .blend in the stack's bucket) or 'manifestUri'")

    arns: dict[str, str | None] = {}
    for name, allowed in (("jobDefinitionArn", job_definition_arns), ("jobQueueArn", job_queue_arns)):
        value = data.get(name)
        if value is not None and value not in allowed:
            raise InvalidInput(f"{name} must name this stack's own ({', '.join(sorted(allowed)) or 'none set'})")
        arns[name] = value

    job_name = data.get("jobName")
    if job_name is not None:
        if not isinstance(job_name, str):
            raise InvalidInput(f"jobName must be a string, not {type(job_name).__name__}")
        job_name = clean_display_name(job_name) or None

    scene = data.get("scene")
    if scene is not None and (not isinstance(scene, str) or not scene or len(scene) > SCENE_NAME_LIMIT):
        raise InvalidInput(f"scene must be a scene name (1 to {SCENE_NAME_LIMIT} characters), got {scene!r:.80}")

    frames_per_job = data.get("framesPerJob")
    if frames_per_job is None or (isinstance(frames_per_job, str) and frames_per_job.strip().lower() == AUTO):
        per_job = None
    else:
        per_job = to_int(frames_per_job, "framesPerJob")
        if not 1 <= per_job <= MAX_FRAMES_PER_JOB:
            raise InvalidInput(f"framesPerJob must be 'auto' or 1 to {MAX_FRAMES_PER_JOB}, got {per_job}")

    allow_scripts = data.get("allowScripts", False)
    if isinstance(allow_scripts, str) and allow_scripts.strip().lower() in ("true", "false"):
        allow_scripts = allow_scripts.strip().lower() == "true"
    if allow_scripts is None:
        allow_scripts = False
    if not isinstance(allow_scripts, bool):
        raise InvalidInput(f"allowScripts must be true or false, got {allow_scripts!r:.40}")

    blender_version = data.get("blenderVersion")
    if blender_version is not None:
        blender_version = spell(parse_version(blender_version, "blenderVersion"))
    blender_runtime = data.get("blenderRuntime")
    if blender_runtime is not None:
        if not isinstance(blender_runtime, str):
            raise InvalidInput(f"blenderRuntime must be a series such as '4.2', got {blender_runtime!r:.40}")
        blender_runtime = resolve_override(blender_runtime)

    start, end, step = (
        None if data.get(name) is None else to_int(data[name], name) for name in ("frameStart", "frameEnd", "frameStep")
    )
    return ExecutionInput(
        blend=blend,
        manifest=manifest,
        output=output,
        job_name=job_name,
        scene=scene,
        frame_start=start,
        frame_end=end,
        frame_step=step,
        frames_per_job=per_job,
        job_definition_arn=arns["jobDefinitionArn"],
        job_queue_arn=arns["jobQueueArn"],
        allow_scripts=allow_scripts,
        blender_version=blender_version,
        blender_runtime=blender_runtime,
        unknown_fields=unknown,
    )


def _uri(data: dict[str, Any], name: str, bucket: str, is_object: bool = True) -> S3Uri | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be an s3:// URI string, not {type(value).__name__}")
    uri = S3Uri.parse(value.strip())
    if uri.bucket != bucket:
        raise InputOutsideBucket(f"{name} {value!r:.200} is outside the stack's bucket {bucket!r}")
    if is_object and (not uri.key or uri.key.endswith("/")):
        raise InvalidInput(f"{name} must name an object, not a folder: {value!r:.200}")
    if len(uri.key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidInput(f"{name} is longer than an S3 key can be")
    return uri


def to_int(value: Any, name: str) -> int:
    """An integer field that may arrive as a JSON number or a string; never a bool, a fraction or a word."""
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip())
    raise InvalidInput(f"{name} must be an integer, got {value!r:.80}")
