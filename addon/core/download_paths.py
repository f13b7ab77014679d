"""Where a downloaded output key may land on the artist's disk: inside the download folder, or nowhere.

S3 keys are arbitrary strings, and whoever can write ``jobs/<id>/frames/`` (a buggy worker, a hostile one, a
mistaken script) chooses them. A key becomes a local path only if every segment is a plain file or folder name
under POSIX *and* Windows rules, whatever this machine runs: the same job then downloads the same way
everywhere, and a name that is harmless here (``a:b``, ``CON.png``, ``..\\x``) cannot reach a Windows artist.
Keys that would overwrite one another (``A.png`` and ``a.png`` on a case-insensitive disk, a file where another
key needs a folder) are planned away before anything is written. Stdlib only: nothing here touches the network.
"""

from __future__ import annotations

import os.path
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import ClassVar

from render_contract.errors import UnsafeDownloadKey

MAX_SEGMENT_BYTES = 255
"""The longest file name NTFS, APFS and ext4 all accept (bytes in UTF-8; NTFS counts UTF-16 units, fewer)."""
_WINDOWS_FORBIDDEN = set('<>:"|?*\\')
_RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|COM[0-9¹²³]|LPT[0-9¹²³])$", re.IGNORECASE)
"""Windows device names: reserved with any extension (``CON.png``) and before trailing spaces (``NUL .txt``)."""


@dataclass(frozen=True)
class SkippedKey:
    """An output key that was not downloaded, and why: reported as a named warning, never raised."""

    key: str
    reason: str
    name: ClassVar[str] = UnsafeDownloadKey.__name__

    def __str__(self) -> str:
        return f"{self.key!r}: {self.reason}"


class UnsafeKey(ValueError):
    """Raised by :func:`local_path` with the reason a key cannot be a local path."""


@dataclass(frozen=True)
class DownloadPlan:
    files: list[tuple[str, str]]
    """(key, local path) pairs, in the order the keys came."""
    skipped: list[SkippedKey]


def segment_problem(segment: str) -> str | None:
    """Why ``segment`` is not a plain file or folder name on both POSIX and Windows, or None when it is."""
    if segment == "":
        return "empty path segment"
    if segment in (".", ".."):
        return f"relative segment {segment!r}"
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in segment):
        return "control character"
    if "\\" in segment:
        return "backslash (a Windows path separator)"
    if ":" in segment:
        return "colon (a drive letter or an NTFS stream)"
    if forbidden := sorted(set(segment) & _WINDOWS_FORBIDDEN):
        return f"character {forbidden[0]!r} is not allowed in Windows file names"
    if segment[-1] in ". ":
        return "trailing dot or space (Windows drops it)"
    if _RESERVED.match(segment.split(".", 1)[0].rstrip(" ")):
        return f"{segment.split('.', 1)[0]!r} is a reserved Windows device name"
    if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
        return f"segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def relative_parts(prefix: str, key: str) -> list[str]:
    """The checked segments of ``key`` below ``prefix``; raises :class:`UnsafeKey` with the reason otherwise."""
    if not isinstance(key, str) or not key.startswith(prefix):
        raise UnsafeKey(f"not under {prefix!r}")
    rest = key[len(prefix) :]
    if not rest:
        raise UnsafeKey("names the folder itself")
    parts = rest.split("/")
    for part in parts:
        if (problem := segment_problem(part)) is not None:
            raise UnsafeKey(problem)
    return parts


def local_path(target: str | os.PathLike[str], prefix: str, key: str, path: ModuleType = os.path) -> str:
    """``target`` joined with ``key``'s segments below ``prefix`` (sub-folders kept), checked to stay inside.

    ``path`` is ``os.path`` (the running OS), or ``posixpath`` / ``ntpath`` to ask about the other OS. The segment
    rules already exclude every escape on both; the final containment check makes that a property of the result.
    """
    parts = relative_parts(prefix, key)
    joined = path.join(os.fspath(target), *parts)  # not normalised: the caller's spelling of target is kept
    root, resolved = path.normpath(os.fspath(target)), path.normpath(joined)
    try:
        inside = path.commonpath([root, resolved]) == root and resolved != root
    except ValueError:  # another drive, or absolute against relative
        inside = False
    if not inside:
        raise UnsafeKey("leaves the download folder")
    return joined


def fold(parts: Iterable[str]) -> tuple[str, ...]:
    """A name as a case-insensitive, normalisation-insensitive disk sees it (Windows, macOS by default)."""
    return tuple(unicodedata.normalize("NFC", part).casefold() for part in parts)


def plan(
    target: str | os.PathLike[str],
    prefix: str,
    keys: Iterable[str],
    path: ModuleType = os.path,
    names: Mapping[str, str] | None = None,
) -> DownloadPlan:
    """Maps each key to its local path so no file is written twice and none is both a file and a folder.

    Keys are taken in order (S3 lists them sorted); a key colliding with one already planned is skipped, so the
    outcome never depends on the order downloads finish in, nor on the disk's case sensitivity. ``names`` gives a
    key its own relative name (``/``-separated: the scene's ``shot010_0001.png`` for ``frames/000001.png``),
    judged by the same rules as a key; other keys are named by their path below ``prefix``.
    """
    files: list[tuple[str, str]] = []
    skipped: list[SkippedKey] = []
    planned_files: dict[tuple[str, ...], str] = {}
    planned_folders: dict[tuple[str, ...], str] = {}
    for key in keys:
        named = key if names is None or key not in names else prefix + names[key]
        try:
            local = local_path(target, prefix, named, path)
        except UnsafeKey as reason:
            skipped.append(SkippedKey(key, str(reason)))
            continue
        name = fold(relative_parts(prefix, named))
        folders = [name[:depth] for depth in range(1, len(name))]
        if name in planned_files:
            skipped.append(SkippedKey(key, f"same file as {planned_files[name]!r} on a case-insensitive disk"))
        elif name in planned_folders:
            skipped.append(SkippedKey(key, f"a folder of {planned_folders[name]!r} has this name"))
        elif clash := next((planned_files[folder] for folder in folders if folder in planned_files), None):
            skipped.append(SkippedKey(key, f"its folder would be the file {clash!r}"))
        else:
            planned_files[name] = key
            for folder in folders:
                planned_folders.setdefault(folder, key)
            files.append((key, local))
    return DownloadPlan(files, skipped)
