"""The flipbook's preview of a frame: a small display-referred JPEG written from the Render Result.

Why from the Render Result and not from the frame file: the frame keeps the scene's format, which may be
scene-linear (OpenEXR); the preview must look as the artist's Blender shows the frame, so it is saved "as render"
with the scene's colour management (view transform, look, exposure, gamma, display device), as a JPEG (a
display-referred format, so Blender applies the view) by :func:`.display.save_display`, the stitch's own way of
making display-referred images, then scaled to at most :data:`~render_contract.layout.PREVIEW_MAX_WIDTH` pixels
wide. ``save_display`` puts the scene's image settings back exactly, so later frames keep their format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from render_contract.layout import PREVIEW_MAX_WIDTH

from . import display

PREVIEW_QUALITY = 80
"""JPEG quality: a 480x270 preview weighs some 10-30 KB."""


def preview_size(width: int, height: int, max_width: int = PREVIEW_MAX_WIDTH) -> tuple[int, int]:
    """The preview's size: the frame's aspect, at most ``max_width`` wide, never upscaled, at least 1x1."""
    if width <= max_width:
        return max(1, width), max(1, height)
    return max_width, max(1, round(height * max_width / width))


def write_preview(bpy: Any, scene: Any, target: Path) -> Path:
    """Writes the current Render Result of ``scene`` to ``target`` (a .jpg) as the artist's display shows it."""
    result = bpy.data.images.get("Render Result")
    if result is None:
        raise RuntimeError("no Render Result to make a preview of")
    display.save_display(result, scene, target, file_format="JPEG", quality=PREVIEW_QUALITY)
    _shrink(bpy, target)
    return target


def _shrink(bpy: Any, path: Path) -> None:
    """Scales the JPEG in place to :func:`preview_size`. Its bytes are display-referred already: loading and saving
    a byte image applies no view transform."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        size = preview_size(width, height)
        if size == (width, height):
            return
        image.scale(*size)
        image.file_format = "JPEG"
        image.filepath_raw = str(path)
        image.save(quality=PREVIEW_QUALITY)
    finally:
        bpy.data.images.remove(image)
