"""The worker's command line, which is the job definitions' command:

    render-worker render|stitch -i INPUT_URI -o OUTPUT_URI -f FRAMES_PER_JOB

``OUTPUT_URI`` is ``s3://BUCKET/jobs/<jobId>``; the plan at ``<OUTPUT_URI>/job.json`` is the source of truth
(``-i`` and ``-f`` are only cross-checked and logged: they exist because the seed's job definition passes them).
The chunk index is ``AWS_BATCH_JOB_ARRAY_INDEX`` (0 when unset, as for a plain job of one chunk).

The exit code tells Batch's retry strategy what happened (see :mod:`render_worker.exitcodes`): 0 done, 65 a
deterministic failure (cause logged and written to ``jobs/<jobId>/errors/``), 75 interrupted, a transient AWS
error, a full disk (``NoSpace``) or a frame that stays corrupt (``CorruptFrame``): retried, and the retry renders
only the frames still missing. The record in ``errors/`` carries a name and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from render_contract import exitcodes, layout
from render_contract.errors import (
    AccessDenied,
    CorruptFrame,
    InvalidInput,
    NoSpace,
    RenderFailed,
    RenderOnAwsError,
    StitchFailed,
)
from render_contract.plan import Plan

from . import blender_runtime, s3io, signals

log = logging.getLogger("render_worker")
ACTIONS = ("render", "stitch")
MESSAGE_LIMIT = 1000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="render-worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("-i", "--input", required=True, help="s3:// URI of the .blend or the job's manifest.json")
    parser.add_argument("-o", "--output", required=True, help="s3://BUCKET/jobs/<jobId>")
    parser.add_argument("-f", "--frames-per-job", default="", help="frames per chunk (logged; the plan decides)")
    return parser.parse_args(argv)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", name, raw)
        return default


def _setup_logging() -> None:
    """One message per line on standard error, no decoration: CloudWatch adds the time, and tests count lines."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def cross_check(plan: Plan, args: argparse.Namespace, job_id: str) -> None:
    """The plan wins; a disagreeing argument is logged (and a plan for another job refused)."""
    if plan.job_id != job_id:
        raise InvalidInput(f"plan at {args.output} is for job {plan.job_id!r}, not {job_id!r}")
    if args.input.rstrip("/") != plan.input_uri.rstrip("/"):
        log.warning("-i %s differs from the plan's input %s; using the plan's", args.input, plan.input_uri)
    if plan.output_uri and args.output.rstrip("/") != plan.output_uri.rstrip("/"):
        log.warning("-o %s differs from the plan's output %s", args.output, plan.output_uri)
    if args.frames_per_job and args.frames_per_job not in (str(plan.frames_per_job), "auto"):
        log.warning(
            "-f %s differs from the plan's %d frames per job; using the plan's",
            args.frames_per_job,
            plan.frames_per_job,
        )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def named_fault(exc: BaseException) -> RenderOnAwsError | None:
    """A full disk anywhere in the cause chain is ``NoSpace``; S3 refusing the role is ``AccessDenied``."""
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return NoSpace(f"the worker's disk is full: {cause.strerror or cause}")
    for cause in _chain(exc):
        if s3io.is_access_denied(cause):
            operation = getattr(cause, "operation_name", "") or "a request"
            return AccessDenied(f"S3 refused {operation}: {cause}")
    return None


def one_line(message: str) -> str:
    """What the artist reads: one line, bounded (the log keeps the whole text)."""
    line = " ".join(str(message).split())
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 3] + "..."


def report_error(
    s3: Any, bucket: str, job_id: str, action: str, chunk: int, attempt: int, exc: RenderOnAwsError
) -> None:
    """Writes the error record the add-on, the CLI and the state machine's cause point to; never raises."""
    record = {
        "error": exc.name,
        "message": one_line(exc.message),
        "frame": exc.frame,
        "chunk": chunk if action == "render" else None,
        "attempt": attempt,
    }
    key = layout.error_key(job_id, action, chunk, attempt)
    try:
        s3io.put_json(s3, bucket, key, record)
        log.info("error recorded at s3://%s/%s", bucket, key)
    except Exception as write_error:  # the log line below still carries the cause
        log.warning("could not record the error in S3: %s", write_error)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one action; returns the exit code (see :mod:`render_worker.exitcodes`)."""
    _setup_logging()
    args = parse_args(argv)
    signals.install()
    chunk = _env_int("AWS_BATCH_JOB_ARRAY_INDEX", 0)
    attempt = _env_int("AWS_BATCH_JOB_ATTEMPT", 1)
    log.info(
        "render-worker %s: batch job %s, attempt %d, array index %d; -i %s -o %s -f %s",
        args.action,
        os.environ.get("AWS_BATCH_JOB_ID", "-"),
        attempt,
        chunk,
        args.input,
        args.output,
        args.frames_per_job,
    )
    try:
        output = layout.S3Uri.parse(args.output)
        job_id = layout.job_id_from_output(output.key)
        if job_id is None:
            raise InvalidInput(f"output {args.output} is not s3://BUCKET/jobs/<jobId>")
    except RenderOnAwsError as exc:
        log.error("%s: %s", exc.name, exc.message)
        return exitcodes.EXIT_FAILED

    s3 = s3io.client()
    try:
        plan = Plan.from_json(s3io.read_bytes(s3, output.bucket, layout.plan_key(job_id)))
        cross_check(plan, args, job_id)
        if args.action == "render":
            from .render import render_chunk

            # Renders with the plan's Blender: returns here, or replaces this process with the runtime's.
            blender_runtime.ensure(plan, list(sys.argv[1:] if argv is None else argv))

            render_chunk(plan, chunk, s3, output.bucket)
        else:
            from .stitch import ffmpeg_binary, needs_plan_blender, stitch

            if needs_plan_blender(plan):  # colour management of scene-linear frames: the plan's Blender's
                os.environ.setdefault("FFMPEG_BINARY", ffmpeg_binary())  # the runtime's venv may lack imageio-ffmpeg
                blender_runtime.ensure(plan, list(sys.argv[1:] if argv is None else argv))
            stitch(plan, s3, output.bucket)
    except signals.Interrupted as exc:
        log.info("interrupted (%s): exiting %d so Batch retries", exc, exitcodes.EXIT_INTERRUPTED)
        return exitcodes.EXIT_INTERRUPTED
    except RenderOnAwsError as exc:
        return _failed(s3, output.bucket, job_id, args.action, chunk, attempt, exc)
    except Exception as exc:
        fault = named_fault(exc)
        if fault is not None:
            fault.frame = getattr(exc, "frame", None)
            return _failed(s3, output.bucket, job_id, args.action, chunk, attempt, fault)
        if s3io.is_transient(exc):
            log.error("transient AWS error, exiting %d so Batch retries: %r", exitcodes.EXIT_INTERRUPTED, exc)
            return exitcodes.EXIT_INTERRUPTED
        log.exception("unexpected failure")
        failure = RenderFailed if args.action == "render" else StitchFailed
        named = failure(f"{type(exc).__name__}: {exc}", frame=getattr(exc, "frame", None))
        report_error(s3, output.bucket, job_id, args.action, chunk, attempt, named)
        return exitcodes.EXIT_FAILED
    log.info("%s done", args.action)
    return exitcodes.EXIT_OK


def exit_code_for(action: str, exc: RenderOnAwsError) -> int:
    """The error's own exit code (the vocabulary's), but for a corrupt frame met by the stitch: it is in S3
    already, so stitching again would meet it again (only rendering it again helps)."""
    if action == "stitch" and isinstance(exc, CorruptFrame):
        return exitcodes.EXIT_FAILED
    return exc.exit_code


def _failed(s3: Any, bucket: str, job_id: str, action: str, chunk: int, attempt: int, exc: RenderOnAwsError) -> int:
    """Logs and records a named error; returns 75 for one another attempt may not meet, else 65."""
    code = exit_code_for(action, exc)
    retried = code == exitcodes.EXIT_INTERRUPTED
    log.error("%s: %s%s", exc.name, exc.message, f" (exiting {code} so Batch retries)" if retried else "")
    report_error(s3, bucket, job_id, action, chunk, attempt, exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
