"""The one rule for a path inside a job's tree, checked alike by the client, the Lambda and the worker.

A job tree path is where the worker writes a file of the manifest under its job folder, so it must be harmless
on the farm and mean one thing only. The client refuses what the farm would refuse (before uploading), the Lambda
refuses it before any Batch job is paid for, and the worker refuses it before writing anything.

The rule: a non-empty relative POSIX path; components separated by single ``/``; no ``.``, ``..`` or empty
component (so ``tex//a.png`` and ``./tex/a.png`` are not second spellings of ``tex/a.png``); no backslash and no
drive (``C:``); no control, format or unassigned characters (a newline in a path is refused); each component at
most :data:`MAX_COMPONENT_BYTES` and the whole at most :data:`MAX_PATH_BYTES` of UTF-8 (Linux's NAME_MAX, and what
leaves room for the worker's folder within PATH_MAX). A *tree* also may not hold a file where another path needs a
folder (``tex`` next to ``tex/a.png``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from .errors import InvalidInput

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 1024


def check_tree_path(rel: object) -> str:
    """``rel`` if it is a valid job tree path, else ``InvalidInput`` saying why."""
    if not isinstance(rel, str) or not rel:
        raise InvalidInput(f"a path in the job's tree must be a non-empty string, got {rel!r:.80}")
    problem = _problem(rel)
    if problem:
        raise InvalidInput(f"cannot place {rel!r:.200} in the job's folder: {problem}; rename the file")
    return rel


def _problem(rel: str) -> str | None:
    if len(rel.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    if rel.startswith("/"):
        return "it is absolute"
    if "\\" in rel:
        return "it holds a backslash"
    if any(unicodedata.category(char).startswith("C") for char in rel):
        return "it holds a control or unprintable character"
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "it has an empty, '.' or '..' part"
    if len(parts[0]) >= 2 and parts[0][1] == ":":
        return "it starts with a drive"
    if any(len(part.encode("utf-8")) > MAX_COMPONENT_BYTES for part in parts):
        return f"a part is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def check_tree(paths: Iterable[str]) -> list[str]:
    """Every path valid, and no file where another path needs a folder; returns the paths sorted."""
    checked = sorted(check_tree_path(path) for path in paths)
    files = set(checked)
    for path in checked:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in files:
                raise InvalidInput(f"{folder!r:.200} is a file, but {path!r:.200} needs it to be a folder")
    return checked
