"""Rendering with the plan's Blender: the worker re-executes itself under that runtime's interpreter.

One image holds every runtime (``$RENDER_RUNTIMES/<series>/bin/python``, each a venv with its pinned bpy and the
worker's other pins); the image's default Python has the newest. The plan names the series the frame counter
chose (:func:`render_contract.runtimes.choose`). When the running bpy is another series, :func:`ensure` replaces
this process (``os.execve``: the same PID, so Batch's and the local cloud's signals still reach the worker) with
the same command under the runtime's interpreter; the repository's ``render_contract`` and ``render_worker`` come
along on ``PYTHONPATH``. The version is read from bpy's package metadata, so the first process never pays for
importing a Blender it will not use.

``RENDER_RUNTIME_INSTALL`` (set by the local cloud only) is a command that installs a missing runtime
(``python -m localcloud.runtimes``, the series appended); without it a missing runtime is ``RuntimeMissing``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from render_contract.errors import RenderOnAwsError, RuntimeMissing
from render_contract.plan import Plan
from render_contract.runtimes import parse_version, series_of

log = logging.getLogger("render_worker")
RUNTIMES_ENV = "RENDER_RUNTIMES"
"""The folder holding ``<series>/bin/python`` (``/opt/blender`` in the image, ``.venv/runtimes`` locally)."""
INSTALL_ENV = "RENDER_RUNTIME_INSTALL"
SERIES_ENV = "RENDER_RUNTIME_SERIES"
"""Set in the re-executed process: a second mismatch there is an error, never a loop."""
DEFAULT_RUNTIMES = "/opt/blender"


def running_version() -> str | None:
    """This interpreter's bpy version (``"5.0.1"``), from its package metadata; None without bpy."""
    try:
        return importlib.metadata.version("bpy")
    except importlib.metadata.PackageNotFoundError:
        return None


def interpreter(series: str) -> Path:
    return Path(os.environ.get(RUNTIMES_ENV) or DEFAULT_RUNTIMES) / series / "bin" / "python"


def _install(series: str) -> None:
    command = os.environ.get(INSTALL_ENV, "").strip()
    if not command:
        return
    log.info("installing the Blender %s runtime: %s %s", series, command, series)
    done = subprocess.run([*shlex.split(command), series], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeMissing(f"could not install the Blender {series} runtime: {lines[-1] if lines else 'no output'}")


def _import_roots() -> list[str]:
    """The folders ``render_contract`` and ``render_worker`` are imported from, for the runtime's ``PYTHONPATH``."""
    import render_contract

    import render_worker

    roots = [str(Path(module.__file__ or "").resolve().parent.parent) for module in (render_contract, render_worker)]
    return list(dict.fromkeys(roots))


def ensure(plan: Plan, argv: Sequence[str]) -> None:
    """Returns when this process runs the plan's Blender; else re-executes the worker (``argv``) under it."""
    wanted = plan.blender_runtime
    running = running_version()
    if not wanted:  # a plan from before runtimes: the image's default Blender
        log.info("rendering with Blender %s (the plan names no runtime)", running)
        return
    try:
        running_series = series_of(parse_version(running)) if running else None
    except RenderOnAwsError:
        running_series = None
    if running_series == wanted:
        if plan.blender_runtime_version and running != plan.blender_runtime_version:
            log.warning("the plan asks for Blender %s; this runtime is %s", plan.blender_runtime_version, running)
        log.info("rendering with Blender %s", running)
        return
    if os.environ.get(SERIES_ENV):
        raise RuntimeMissing(f"the Blender {wanted} runtime at {sys.executable} runs bpy {running}, not {wanted}")
    python = interpreter(wanted)
    if not python.exists():
        _install(wanted)
    if not python.exists():
        raise RuntimeMissing(
            f"this worker has no Blender {wanted} runtime (no {python}): rebuild the worker image (make worker-image)"
        )
    environment = dict(os.environ)
    environment[SERIES_ENV] = wanted
    environment["PYTHONPATH"] = os.pathsep.join([*_import_roots(), environment.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    log.info("re-executing under the Blender %s runtime (%s; this one is %s)", wanted, python, running)
    for handler in log.handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(str(python), [str(python), "-m", "render_worker.cli", *argv], environment)
