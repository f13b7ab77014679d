"""The Blender runtimes the farm renders with, and the one rule that picks one for a job.

Why: Blender's renders differ between series (bpy 5.0 renders a 4.2 file measurably differently from 4.2 itself),
and an artist compares the farm's frames with F12 in their own Blender. So the farm keeps one runtime per
supported series (a bpy wheel at a pinned patch version, each in its own environment) and a job renders on the
series that saved its file. The frame counter applies :func:`choose` once, writes the result into the plan, and
every worker renders with the plan's runtime; clients show which Blender rendered and any notice.

The rule (:func:`choose`):

* an override (``blenderRuntime``) names a series of :data:`RUNTIMES` (or its exact pinned version), else
  ``UnknownRuntime``; it wins, with an ``OtherBlenderRuntime`` notice when it is not the file's series;
* else the file's series when the farm has it (no notice);
* else the nearest newer series, with an ``OtherBlenderRuntime`` notice (e.g. a 4.3 or a 3.6 file);
* a file newer than every runtime is ``BlenderTooNew``, before any Batch job is paid for.

The artist's own Blender (``blenderVersion``, the add-on's ``bpy.app.version``) is checked against the file's
header: when they differ (a file submitted from the command line, saved by another Blender) the notice
``BlenderVersionMismatch`` says so; the file still decides, since its header says what wrote its data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BlenderTooNew, BlenderVersionMismatch, InvalidInput, OtherBlenderRuntime, UnknownRuntime

RUNTIMES: dict[str, str] = {"4.2": "4.2.23", "4.5": "4.5.15", "5.0": "5.0.1"}
"""Series -> the pinned ``bpy`` version of that series's runtime (the newest patch on PyPI for Python 3.11 when
pinned). The worker image and the local cloud's environments install exactly these."""

Version = tuple[int, ...]
_VERSION = re.compile(r"^\s*([0-9]{1,3})\.([0-9]{1,3})(?:\.([0-9]{1,3}))?\s*$")


def parse_version(value: Any, name: str = "version") -> Version:
    """``"4.2"``, ``"4.2.3"``, ``[4, 2, 3]`` (``bpy.app.version``) -> ``(4, 2)`` / ``(4, 2, 3)``; else
    ``InvalidInput``."""
    if isinstance(value, list | tuple) and 2 <= len(value) <= 3:
        if all(isinstance(part, int) and not isinstance(part, bool) and 0 <= part < 1000 for part in value):
            return tuple(value)
    elif isinstance(value, str):
        match = _VERSION.match(value)
        if match:
            return tuple(int(part) for part in match.groups() if part is not None)
    raise InvalidInput(f"{name} must be a Blender version such as '4.2' or '4.2.3', got {value!r:.40}")


def spell(version: Sequence[int]) -> str:
    """``(4, 2, 3)`` -> ``"4.2.3"``."""
    return ".".join(str(part) for part in version)


def series_of(version: Sequence[int]) -> str:
    """``(4, 2, 3)`` -> ``"4.2"``: runtimes are kept per series (major.minor), as Blender's LTS lines are."""
    return spell(version[:2])


def _key(series: str) -> Version:
    return parse_version(series)


def resolve_override(value: str) -> str:
    """The series an override names: ``"4.2"`` or the exact pinned ``"4.2.23"``; anything else is
    ``UnknownRuntime`` (a patch version the farm does not have would be a promise it cannot keep)."""
    version = parse_version(value, "blenderRuntime")
    series = series_of(version)
    if series in RUNTIMES and (len(version) == 2 or spell(version) == RUNTIMES[series]):
        return series
    raise UnknownRuntime(f"the farm has no Blender {spell(version)} runtime; it has {available()}")


def available() -> str:
    """``"4.2 (4.2.23), 4.5 (4.5.15), 5.0 (5.0.1)"``: what a message offers."""
    return ", ".join(f"{series} ({version})" for series, version in sorted(RUNTIMES.items(), key=lambda i: _key(i[0])))


@dataclass(frozen=True)
class Choice:
    """The runtime a job renders with, and why, for the plan and the artist."""

    series: str
    """The runtime's series, a key of :data:`RUNTIMES`."""
    bpy_version: str
    """The runtime's pinned Blender version, what "rendered with Blender ..." shows."""
    notices: tuple[str, ...] = ()
    """``"Name: message"`` lines (named warnings of the vocabulary) the artist should read."""


def choose(
    file_version: str | Sequence[int] | None,
    override: str | None = None,
    artist_version: str | Sequence[int] | None = None,
) -> Choice:
    """Picks the runtime for a file saved by ``file_version`` (the .blend header's ``"4.2"``); see the module doc."""
    file_v = parse_version(file_version, "the file's Blender version") if file_version is not None else None
    notices: list[str] = []
    if artist_version is not None:
        artist_v = parse_version(artist_version, "blenderVersion")
        if file_v is not None and series_of(artist_v) != series_of(file_v):
            notices.append(
                _notice(
                    BlenderVersionMismatch,
                    f"your Blender is {spell(artist_v)} but the file was last saved by Blender {spell(file_v)}; "
                    "the farm follows the file",
                )
            )
        elif file_v is None:
            file_v = artist_v
    ordered = sorted(RUNTIMES, key=_key)
    if override is not None:
        series = resolve_override(override)
        if file_v is not None and series != series_of(file_v):
            notices.append(
                _notice(
                    OtherBlenderRuntime,
                    f"rendering with Blender {RUNTIMES[series]} as asked; the file was saved by Blender "
                    f"{spell(file_v)}, so frames may differ from its own render",
                )
            )
        return Choice(series, RUNTIMES[series], tuple(notices))
    if file_v is None:
        series = ordered[-1]
        notices.append(
            _notice(OtherBlenderRuntime, f"the file's Blender version is unknown: Blender {RUNTIMES[series]}")
        )
        return Choice(series, RUNTIMES[series], tuple(notices))
    wanted = series_of(file_v)
    if wanted in RUNTIMES:
        return Choice(wanted, RUNTIMES[wanted], tuple(notices))
    newer = [series for series in ordered if _key(series) > _key(wanted)]
    if not newer:
        raise BlenderTooNew(
            f"the file was saved by Blender {spell(file_v)}, newer than every runtime of the farm ({available()}): "
            "save it with one of those, or ask your admin to add the series"
        )
    series = newer[0]
    notices.append(
        _notice(
            OtherBlenderRuntime,
            f"the farm has no Blender {wanted} runtime: rendering with Blender {RUNTIMES[series]}, the nearest newer "
            f"series, so frames may differ from Blender {wanted}'s own render",
        )
    )
    return Choice(series, RUNTIMES[series], tuple(notices))


def _notice(kind: type[Exception], message: str) -> str:
    return f"{kind.__name__}: {message}"
