"""Writes the worker image's build context (container/, contract/, pyproject.toml) as a reproducible zip.

Why reproducible: the deploy's custom resource (lambda/worker_image) names the image it builds after the zip's
SHA-256 (tag ``src-<hash>``) and skips the 10-15 minute CodeBuild run when that image is already in the
repository, so the same files must give the same bytes (sorted entries, fixed times and modes, no caches).
Both `make worker-image` and the custom resource's package (`sam build`) use it: one definition of the context.

    python scripts/worker_context.py OUT.zip     # prints the zip's sha256
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ("container", "contract", "pyproject.toml")
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def context_files(root: Path = ROOT) -> Iterator[Path]:
    """The files of the build context, in a fixed order."""
    for name in CONTEXT:
        top = root / name
        candidates = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in candidates:
            relative = path.relative_to(root)
            if (
                path.is_file()
                and not SKIPPED_PARTS.intersection(relative.parts)
                and path.suffix not in SKIPPED_SUFFIXES
            ):
                yield path


def write_context(out: Path, root: Path = ROOT) -> str:
    """Write the zip to ``out``; return its sha256 (hex)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(context_files(root), key=lambda p: p.relative_to(root).as_posix()):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=FIXED_TIME)
            info.external_attr = (0o755 if path.stat().st_mode & 0o111 else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(write_context(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
