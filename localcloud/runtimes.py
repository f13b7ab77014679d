"""The local cloud's Blender runtimes: one cached environment per series, created on first use.

The worker image holds every runtime of :data:`render_contract.runtimes.RUNTIMES` (``/opt/blender/<series>``);
the local cloud has the project's ``.venv`` (bpy 5.0.1: the 5.0 runtime) and, for every other series, a venv at
``.venv/runtimes/<series>/`` (gitignored) with that series's pinned bpy and the worker's other pins from
``container/requirements.txt``, so a local job renders with the same Blender as on AWS. The repository's
``render_contract`` and ``render_worker`` are not installed there: the worker puts them on ``PYTHONPATH`` when it
re-executes itself (:mod:`render_worker.blender_runtime`).

Creating one downloads about 350 MB and takes a minute or two, so ``make test`` creates them before the suite
(``python -m localcloud.runtimes``). A file lock per series keeps two workers (or a worker and ``make``) from
installing the same one at once; a marker file written last says the install is whole.

Command line (what ``make`` and the worker's ``RENDER_RUNTIME_INSTALL`` run): ``python -m localcloud.runtimes
[SERIES ...]``; no series: every series but the ``.venv``'s own. Prints each runtime's interpreter.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from render_contract.errors import RenderOnAwsError, RuntimeMissing, UnknownRuntime
from render_contract.runtimes import RUNTIMES, available, parse_version, series_of

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / ".venv" / "runtimes"
WORKER_REQUIREMENTS = ROOT / "container" / "requirements.txt"
RUNTIMES_ENV = "RENDER_RUNTIMES"
"""The folder holding ``<series>/bin/python`` (the worker reads the same variable)."""


def runtimes_dir() -> Path:
    return Path(os.environ.get(RUNTIMES_ENV) or DEFAULT_DIR)


def interpreter(series: str, root: Path | None = None) -> Path:
    return (root or runtimes_dir()) / series / "bin" / "python"


def current_series() -> str | None:
    """The series of this interpreter's own bpy (``5.0`` for the project's .venv), without importing bpy."""
    try:
        return series_of(parse_version(importlib.metadata.version("bpy")))
    except (importlib.metadata.PackageNotFoundError, RenderOnAwsError):
        return None


def python_for(series: str) -> Path:
    """An interpreter whose bpy is the series's runtime: this one when it is, else the cached environment."""
    if series == current_series():
        return Path(sys.executable)
    return ensure(series)


def worker_pins() -> list[str]:
    """The worker's pins but bpy (the runtime brings its own), exactly as the image installs them."""
    lines = (line.split("#", 1)[0].strip() for line in WORKER_REQUIREMENTS.read_text().splitlines())
    return [line for line in lines if line and not line.lower().startswith("bpy==")]


def ensure(series: str, root: Path | None = None) -> Path:
    """The interpreter of the series's runtime, installed first if it is not (under a lock)."""
    if series not in RUNTIMES:
        raise UnknownRuntime(f"the farm has no Blender {series} runtime; it has {available()}")
    root = root or runtimes_dir()
    folder = root / series
    python = interpreter(series, root)
    marker = folder / f".installed-bpy-{RUNTIMES[series]}"
    if marker.is_file():
        return python
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{series}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second installer waits here, then finds the marker
        if marker.is_file():
            return python
        print(f"installing the Blender {RUNTIMES[series]} runtime into {folder} (once)", file=sys.stderr, flush=True)
        for stale in folder.glob(".installed-bpy-*"):
            stale.unlink()
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        steps = [[sys.executable, "-m", "venv", str(folder)], [*pip, f"bpy=={RUNTIMES[series]}", *worker_pins()]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                tail = " ".join((done.stderr or done.stdout).split())[-600:]
                raise RuntimeMissing(f"installing the Blender {RUNTIMES[series]} runtime failed: {tail}")
        marker.touch()
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud.runtimes", description=__doc__.split("\n\n")[0])
    parser.add_argument("series", nargs="*", help=f"runtimes to install (of {', '.join(RUNTIMES)})")
    args = parser.parse_args(argv)
    wanted = args.series or [series for series in RUNTIMES if series != current_series()]
    try:
        for series in wanted:
            print(python_for(series), flush=True)
    except RenderOnAwsError as error:
        print(f"{error.name}: {error.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
