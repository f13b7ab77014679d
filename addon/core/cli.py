"""``render-on-aws``: the command line of the bpy-free core (used by ``make demo``, scripts and tests).

Exit status 0 on success; otherwise non-zero with the error's name on the last line of standard error.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from render_contract.errors import (
    InvalidInput,
    MissingDependencies,
    PythonNotRun,
    RenderOnAwsError,
    UnbakedSimulation,
)
from render_contract.ids import ARTIST_TAG
from render_contract.plan import Plan
from render_contract.runtimes import available

from . import deliveries
from .connection import DEFAULT_STACK, Connection, ConnectionSettings
from .download_paths import SkippedKey
from .downloading import download, download_job
from .following import JobStatus, JobWatcher, poll_interval, wait
from .jobref import JobRef
from .preparing import SubmitRequest, prepare
from .progress import EtaEstimator, bar, describe
from .starting import resume, stop, submit_prepared

EXIT_FAILED = 1
ARTIST_ENV = "RENDER_ON_AWS_ARTIST"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _frames(text: str) -> tuple[int, int]:
    start, sep, end = text.partition("-")
    try:
        return int(start), int(end if sep else start)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected START-END, got {text!r}") from error


def _frames_per_job(text: str) -> str:
    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}")


class _Parser(argparse.ArgumentParser):
    """Bad arguments are an ``InvalidInput`` like any other bad input: named on the last line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"\n{InvalidInput.__name__}: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    main = _Parser(prog="render-on-aws", description="Render a .blend on the Render on AWS stack.")
    main.add_argument("--endpoint", help="endpoint URL (the local cloud's); default: AWS")
    main.add_argument("--region", help="AWS region (default: your AWS config's)")
    main.add_argument("--profile", help="AWS profile (default: boto3's credential chain)")
    main.add_argument("--stack", default=DEFAULT_STACK, help=f"stack name (default: {DEFAULT_STACK})")
    main.add_argument(
        "--artist",
        default=os.environ.get(ARTIST_ENV) or None,
        help=f"your {ARTIST_TAG} IAM tag, which starts your job ids (default: ${ARTIST_ENV})",
    )
    main.add_argument("--poll-interval", type=float, help="seconds between status polls (default 10; 0.5 locally)")
    commands = main.add_subparsers(dest="command", required=True, parser_class=_Parser)

    submit = commands.add_parser("submit", help="upload a .blend and render it")
    submit.add_argument("blend", type=Path)
    submit.add_argument("--job-name", help="default: the file's name")
    submit.add_argument("--frames-per-job", type=_frames_per_job, default="auto")
    submit.add_argument("--frames", type=_frames, metavar="START-END", help="override the scene's frame range")
    submit.add_argument("--scene", help="scene to render (default: the file's active scene)")
    submit.add_argument("--allow-missing", action="store_true", help="submit even if files the scene uses are missing")
    submit.add_argument(
        "--allow-scripts",
        action="store_true",
        help="run the file's Python scripts and Python drivers on the farm (they run with the worker's AWS role)",
    )
    submit.add_argument(
        "--blender",
        metavar="SERIES",
        help=f"render with this Blender runtime instead of the file's own series (the farm has {available()})",
    )
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    submit.add_argument("--download", type=Path, metavar="DIR", help="with --wait: download the video here")
    submit.add_argument(
        "--with-frames",
        action="store_true",
        help="with --download: also the frames (named as the scene's output path names them) and the compositor's "
        "File Output node files, into DIR/<job id>/",
    )
    submit.add_argument(
        "--download-to-output-path",
        action="store_true",
        help="with --wait: write the frames and File Output node files where the scene's output paths put them "
        "(relative to the .blend's folder), as Render Animation would; the video goes next to the frames "
        "unless --download DIR says otherwise",
    )

    for name, text in (("status", "show a job's state"), ("cancel", "stop a job and its Batch jobs")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job_id")
    resume = commands.add_parser(
        "resume", help="run a failed or cancelled job again: only its missing frames, nothing uploaded again"
    )
    resume.add_argument("job_id")
    resume.add_argument("--wait", action="store_true", help="follow the job until it ends")
    resume.add_argument("--download", type=Path, metavar="DIR", help="with --wait: download the video here")
    download = commands.add_parser("download", help="download a finished job's video")
    download.add_argument("job_id")
    download.add_argument("directory", type=Path)
    download.add_argument(
        "--with-frames",
        action="store_true",
        help="also every frame (named as the scene's output path names them) and File Output node file, "
        "into DIRECTORY/<job id>/",
    )
    download.add_argument(
        "--into-output-path",
        action="store_true",
        help="DIRECTORY is the .blend's folder ('//'): write the frames and File Output node files where the "
        "scene's output paths put them below it, as Render Animation would (implies --with-frames)",
    )
    return main


class ProgressPrinter:
    """A progress bar on a terminal; one line per change otherwise (logs, CI)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.eta = EtaEstimator()
        self.last_eta: float | None = None
        self._last = ""
        self._warned_python = False
        self._warned_runtime = False
        self._told_deliveries = False
        self.destination: Callable[[Plan], str] = lambda plan: deliveries.DEFAULT_DESTINATION
        """Where the frames will land, for "what will come back" (known once the plan is)."""

    def upload(self, done: int, total: int) -> None:
        self._show(f"{bar(done, total)} uploading {done / 1e6:.1f}/{total / 1e6:.1f} MB")

    def job(self, status: JobStatus) -> None:
        if status.python_use and not self._warned_python:
            self._warned_python = True
            self.done()
            warn_python_use(status.python_use, self.stream)
        if status.blender and not self._warned_runtime:
            self._warned_runtime = True
            self.done()
            say_runtime(status, self.stream)
        if status.plan is not None and not self._told_deliveries:
            self._told_deliveries = True
            self.done()
            tell_deliveries(status.plan, self.destination(status.plan), self.stream)
        eta = self.last_eta = self.eta.update(status.frames_done, status.frames_total)
        self._show(f"{bar(status.frames_done, status.frames_total)} {describe(status, eta)}")

    def _show(self, line: str) -> None:
        if line == self._last:
            return
        self._last = line
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
        self._last = ""


def run(args: argparse.Namespace) -> int:
    settings = ConnectionSettings(
        stack=args.stack, region=args.region, profile=args.profile, endpoint=args.endpoint, artist=args.artist
    )
    connection = Connection(settings)
    printer = ProgressPrinter()

    def interval(status: JobStatus) -> float:
        return args.poll_interval or poll_interval(settings.is_local, status.phase, printer.last_eta)

    blend = getattr(args, "blend", None)
    into_output_path = bool(getattr(args, "download_to_output_path", False))
    root = blend.resolve().parent if blend is not None and into_output_path else None
    with_frames = bool(getattr(args, "with_frames", False)) or into_output_path
    download_dir: Path | None = getattr(args, "download", None)

    def destination(plan: Plan, job_id: str) -> str:
        if root is not None:
            return f"{deliveries.output_folder(plan, root)}{os.sep}"
        if download_dir is not None and with_frames:
            return f"{download_dir / job_id}{os.sep}"
        return f"{deliveries.DEFAULT_DESTINATION} (download JOB DIR --with-frames: DIR/<job id>/)"

    def follow(job: JobRef) -> int:
        printer.destination = lambda plan: destination(plan, job.job_id)
        status = wait(connection, job, printer.job, interval)
        printer.done()
        status.raise_for_failure()
        if download_dir is not None or root is not None:
            directory = download_dir
            if directory is None:
                assert root is not None and status.plan is not None
                directory = deliveries.output_folder(status.plan, root)
            result = download_job(connection, job, directory, frames=with_frames, output_root=root)
            for item in result.skipped:
                _warn_skipped(item)
            print(f"video: {result.video}", file=sys.stderr)
            if result.frames:
                print(f"frames: {len(result.frames)} in {result.frames[0].parent}", file=sys.stderr)
            if result.outputs:
                print(f"File Output node files: {len(result.outputs)}", file=sys.stderr)
            print(result.video)
        return 0

    if args.command == "submit":
        if (args.download or args.download_to_output_path) and not args.wait:
            raise InvalidInput("--download and --download-to-output-path need --wait")
        if args.with_frames and not (args.download or args.download_to_output_path):
            raise InvalidInput("--with-frames needs --download DIR (--download-to-output-path implies the frames)")
        start, end = args.frames or (None, None)
        request = SubmitRequest(
            blend=args.blend,
            job_name=args.job_name,
            frames_per_job=args.frames_per_job,
            frame_start=start,
            frame_end=end,
            scene=args.scene,
            allow_scripts=args.allow_scripts,
            blender_runtime=args.blender,
        )
        prepared = prepare(request)
        try:
            if prepared.unbaked:
                warn_unbaked(prepared.unbaked, sys.stderr)
            if prepared.missing:
                for item in prepared.missing:
                    print(f"missing: {item.path} (used by {item.used_by})", file=sys.stderr)
                if not args.allow_missing:
                    raise MissingDependencies(
                        f"{len(prepared.missing)} file(s) the scene uses are missing; "
                        "fix the paths or pass --allow-missing"
                    )
            job = submit_prepared(connection, prepared, progress=printer.upload)
        finally:
            prepared.cleanup()
        printer.done()
        print(f"submitted job {job.job_id}", file=sys.stderr)
        print(job.job_id)
        return follow(job) if args.wait else 0

    if args.command == "resume":
        if args.download and not args.wait:
            raise InvalidInput("--download needs --wait")
        job = resume(connection, args.job_id)
        print(f"resumed job {job.job_id} (run {job.run})", file=sys.stderr)
        print(job.job_id)
        return follow(job) if args.wait else 0
    job = JobRef.latest(connection, args.job_id)[0]
    if args.command == "status":
        status = JobWatcher(connection, job).poll()
        if status.python_use:
            warn_python_use(status.python_use, sys.stderr)
        if status.blender:
            say_runtime(status, sys.stderr)
        if status.plan is not None:
            tell_deliveries(status.plan, destination(status.plan, job.job_id), sys.stderr)
        print(f"{job.job_id}: {describe(status)}")
        status.raise_for_failure()
        return 0
    if args.command == "cancel":
        stop(connection, job)
        print(f"cancelled {job.job_id}", file=sys.stderr)
        return 0
    into = args.into_output_path
    paths = download(
        connection,
        job,
        args.directory,
        frames=args.with_frames or into,
        on_skipped=_warn_skipped,
        output_root=args.directory if into else None,
    )
    for path in paths:
        print(path)
    return 0


def tell_deliveries(plan: Plan, destination: str, stream: TextIO) -> None:
    """What will come back (formats, names, where, video), from the plan, before the frames are rendered."""
    for line in deliveries.describe(plan, destination):
        print(f"will come back: {line}", file=stream)


def warn_python_use(python_use: tuple[str, ...], stream: TextIO) -> None:
    """The farm does not run the file's Python unless the job allows it: say what will render differently."""
    print(
        f"warning: {PythonNotRun.__name__}: {len(python_use)} thing(s) in the file need Python, which the farm "
        "does not run for this job (submit with --allow-scripts to run them, with the worker's AWS role):",
        file=stream,
    )
    for item in python_use[:20]:
        print(f"  {item}", file=stream)


def say_runtime(status: JobStatus, stream: TextIO) -> None:
    """Which Blender renders the job, and why when it is not the file's own: frames are compared with F12."""
    for notice in status.runtime_notices:
        print(f"warning: {notice}", file=stream)
    verb = "rendered" if status.finished else "renders"
    print(f"blender: {verb} with Blender {status.blender}", file=stream)


def warn_unbaked(unbaked: list[str], stream: TextIO) -> None:
    """Chunks start mid-shot: a simulation that is not baked renders wrong there, and nothing else would say so."""
    print(
        f"warning: {UnbakedSimulation.__name__}: {len(unbaked)} simulation(s) in the scene are not baked; each chunk "
        "of the job starts mid-shot in a fresh Blender, so they render differently from your Blender (bake them "
        "first: Physics properties > Bake, or the modifier's Bake for simulation zones):",
        file=stream,
    )
    for item in unbaked[:20]:
        print(f"  {item}", file=stream)
    if len(unbaked) > 20:
        print(f"  ... and {len(unbaked) - 20} more", file=stream)


def _warn_skipped(skipped: SkippedKey) -> None:
    print(f"warning: {skipped.name}: {skipped}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except RenderOnAwsError as error:
        print(f"\n{error.name}: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "\nInterrupted: the job (if submitted) keeps running; `render-on-aws cancel JOB` stops it.", file=sys.stderr
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    threading.current_thread().name = "render-on-aws"
    sys.exit(main())
