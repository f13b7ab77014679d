"""What the farm delivers and how Blender names it: the scene's output path rules, written once (stdlib only).

The farm stores the main image of frame N at ``jobs/<id>/frames/<NNNNNN>.<ext>`` whatever the scene's output path
says (the stitch, progress, resume and verification rely on that key); the artist's names are given back at
download, from the pattern the frame counter read from the .blend. The rules are Blender's own
(``BKE_image_path_from_imformat``), checked against bpy 5.0.1's ``RenderSettings.frame_path`` by the tests:

* ``//`` at the start is the .blend's folder; ``/`` and ``\\`` both separate folders; a trailing separator means
  a folder and the file is just the frame number.
* The last run of ``#`` in the *file name* (runs in folder names are left alone) is the frame number,
  zero-padded to the run's length (``-0003`` for frame -3 and ``####``); no ``#`` in the file name: the frame is
  appended with 4 digits.
* With ``use_file_extension`` the format's extension is added, unless the name already ends with one of the
  format's own extensions (any case); a known image extension of another format is replaced (``shot.jpg`` ->
  ``shot.png`` for PNG).

Compositor File Output node files keep their own names: they are stored under
``jobs/<id>/outputs/<path relative to the .blend's folder>`` as Blender wrote them (:func:`node_relative_dir`).
"""

from __future__ import annotations

import posixpath
import re

STILL_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "PNG": ("png",),
    "JPEG": ("jpg", "jpeg"),
    "OPEN_EXR": ("exr",),
    "OPEN_EXR_MULTILAYER": ("exr",),
    "TIFF": ("tif", "tiff"),
    "WEBP": ("webp",),
    "BMP": ("bmp",),
    "TARGA": ("tga",),
    "TARGA_RAW": ("tga",),
    "JPEG2000": ("jp2", "j2c"),
    "DPX": ("dpx",),
    "CINEON": ("cin",),
    "HDR": ("hdr",),
    "IRIS": ("rgb", "sgi"),
}
"""Blender's extensions per still format (the first is the one it writes); movies have none here."""
KNOWN_IMAGE_EXTENSIONS = frozenset(
    [
        "png",
        "tga",
        "bmp",
        "jpg",
        "jpeg",
        "sgi",
        "rgb",
        "rgba",
        "tif",
        "tiff",
        "tx",
        "jp2",
        "j2c",
        "hdr",
        "dds",
        "dpx",
        "cin",
        "exr",
        "psd",
        "pdd",
        "psb",
        "webp",
    ]
)
"""Blender's ``imb_ext_image``: an output path ending in one of these has it replaced, not kept before the new one."""
DEFAULT_FRAME_DIGITS = 4
"""Blender appends the frame with 4 digits when the file name has no ``#``."""
ABSOLUTE_DIR = "_absolute"
"""File Output node folders given as absolute paths are stored under ``outputs/_absolute/<path without root>``."""
_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"^[A-Za-z]:")


def split(pattern: str) -> tuple[str, str]:
    """(folder, file-name pattern) of an output path: the folder keeps its trailing separator (``//renders/``)."""
    cut = max(pattern.rfind("/"), pattern.rfind("\\")) + 1
    return pattern[:cut], pattern[cut:]


def frame_digits(frame: int, digits: int) -> str:
    """The frame as Blender writes it: zero-padded to ``digits``, the sign before the zeros (``-0003``)."""
    return f"{'-' if frame < 0 else ''}{abs(frame):0{digits}d}"


def ensure_extension(name: str, file_format: str) -> str:
    """``name`` with the format's extension, as ``use_file_extension`` adds it (see the module's rules)."""
    own = STILL_EXTENSIONS.get(file_format)
    if not own:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and ext.lower() in own:
        return name
    if dot and stem and ext.lower() in KNOWN_IMAGE_EXTENSIONS:
        name = stem
    return f"{name}.{own[0]}"


def frame_name(pattern: str, frame: int, file_format: str, use_file_extension: bool = True) -> str:
    """The file name (no folder) Blender gives frame ``frame`` for output path ``pattern`` in ``file_format``."""
    _folder, name = split(pattern)
    runs = list(re.finditer(r"#+", name))
    if runs:
        run = runs[-1]
        name = name[: run.start()] + frame_digits(frame, len(run.group())) + name[run.end() :]
    else:
        name = name + frame_digits(frame, DEFAULT_FRAME_DIGITS)
    return ensure_extension(name, file_format) if use_file_extension else name


def frame_path(pattern: str, frame: int, file_format: str, use_file_extension: bool = True) -> str:
    """The whole path (folder as the pattern spells it, ``//`` kept) Blender writes frame ``frame`` to."""
    folder, _name = split(pattern)
    return folder + frame_name(pattern, frame, file_format, use_file_extension)


def relative_folder_parts(folder: str) -> list[str]:
    """A folder's segments, ``//`` and empty segments dropped, ``.`` skipped, ``..`` kept (the caller decides)."""
    rest = folder[2:] if folder.startswith("//") else folder
    return [part for part in _SEPARATORS.split(rest) if part not in ("", ".")]


def is_absolute(path: str) -> bool:
    """An absolute path on any OS (``/x``, ``\\\\server\\x``, ``C:\\x``); ``//`` is Blender's relative prefix."""
    if path.startswith("//"):
        return False
    return path.startswith(("/", "\\")) or bool(_DRIVE.match(path))


def node_relative_dir(directory: str) -> str:
    """Where a File Output node's folder lives below ``jobs/<id>/outputs/``: its path relative to the .blend's
    folder (``//comp/`` -> ``comp``), or ``_absolute/<path without root or drive>`` for an absolute folder.
    ``..`` segments are dropped (a relative folder above the .blend's keeps the rest of its path): the result
    never leaves the outputs folder, on the farm's disk or on the artist's."""
    if is_absolute(directory):
        parts = [ABSOLUTE_DIR, *relative_folder_parts(_DRIVE.sub("", directory))]
    else:
        parts = relative_folder_parts(directory)
    return posixpath.join(*[part for part in parts if part != ".."]) if parts else ""


_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def expand_templates(pattern: str, variables: dict[str, str]) -> str:
    """``pattern`` with Blender 5's path templates filled in (``//r/{scene_name}_####`` -> ``//r/Scene_####``).

    Raises ``ValueError`` for what Blender refuses to render with (an unknown variable, a lone brace) and for
    format specifiers (``{fps:##.#}``), which are not reproduced here: the caller keeps the pattern as it is.
    """

    def fill(match: re.Match[str]) -> str:
        text = match.group(0)
        if text in ("{{", "}}"):
            return text[0]
        name = match.group(1)
        if name is None:
            raise ValueError(f"lone {text!r} in {pattern!r}")
        if name not in variables:
            raise ValueError(f"template {text} is not reproduced (unknown variable or format specifier)")
        return variables[name]

    return _TEMPLATE.sub(fill, pattern)
