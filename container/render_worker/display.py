"""Display-referred images with the scene's colour management: what the Render window shows.

An OpenEXR frame holds scene-linear light; a video holds display-referred pixels. Feeding EXR frames to FFmpeg
as they are clips and skips the view transform (the seed's preview of an EXR job differed from the Render window
by a mean of 0.15 on a 0..1 scale). Blender itself turns linear into display values when it saves "as render":
``Image.save_render(path, scene=scene)`` applies the scene's view transform, look, exposure, gamma, curves and
display device (``scene.view_settings``, ``scene.display_settings``), exactly as the Render window and an F12
PNG do, with the OpenColorIO config of the Blender that renders. So the conversion is Blender's own, not a
re-implementation of AgX or Filmic in NumPy.

Used by the stitch for a stills job whose frames are scene-linear; :func:`save_display` takes any image
(``bpy.data.images["Render Result"]`` too), so a flipbook writer can make its previews the same way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from render_contract.errors import RenderOnAwsError, StitchFailed

log = logging.getLogger("render_worker")
SCENE_LINEAR_EXTENSIONS = frozenset({"exr", "hdr"})
"""Frame formats Blender writes scene-linear (every other format is saved display-referred already)."""


def is_scene_linear(extension: str) -> bool:
    return extension.lower() in SCENE_LINEAR_EXTENSIONS


@contextlib.contextmanager
def _output_as(scene: Any, file_format: str, color_depth: str, quality: int) -> Iterator[None]:
    """The scene's output set to an 8-bit display format following the scene's view, restored afterwards (the
    caller may be a render worker that goes on rendering with the artist's settings)."""
    settings = scene.render.image_settings
    wanted: list[tuple[str, Any]] = [
        ("media_type", "IMAGE"),  # Blender 5 splits images from videos; 4.x has no media_type
        ("file_format", file_format),
        ("color_mode", "RGB"),
        ("color_depth", color_depth),
        ("quality", quality),
        ("color_management", "FOLLOW_SCENE"),
    ]
    # Every setting is read before any is changed: switching the format clamps the colour mode and depth (PNG
    # RGBA 16-bit read after a switch to JPEG would be saved as RGB 8-bit and "restored" so).
    saved: dict[str, Any] = {name: getattr(settings, name) for name, _ in wanted if hasattr(settings, name)}
    try:
        for name, value in wanted:
            if name in saved:
                with contextlib.suppress(TypeError, AttributeError):
                    setattr(settings, name, value)
        yield
    finally:
        for name, value in saved.items():
            with contextlib.suppress(TypeError, AttributeError):
                setattr(settings, name, value)


def save_display(
    image: Any,
    scene: Any,
    target: Path,
    file_format: str = "PNG",
    quality: int = 90,
    error: type[RenderOnAwsError] = StitchFailed,
) -> Path:
    """Saves ``image`` display-referred with ``scene``'s view settings (view transform, look, exposure, gamma,
    curves, display device) as an 8-bit ``file_format`` image at ``target``; a failure is ``error`` (the stitch's,
    or the render's when the render worker saves it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    depth = "8"
    with _output_as(scene, file_format, depth, quality):
        try:
            image.save_render(filepath=str(target), scene=scene)
        except RuntimeError as exc:
            raise error(f"Blender cannot save {target.name} display-referred: {str(exc).strip()}") from exc
    if not target.is_file() or target.stat().st_size == 0:
        raise error(f"Blender wrote no display-referred image at {target.name}")
    return target


def to_display(scene: Any, source: Path, target: Path, error: type[RenderOnAwsError] = StitchFailed) -> Path:
    """``source`` (a scene-linear EXR frame; a multilayer one gives its first layer, as Blender shows the file) as
    an 8-bit PNG the way the Render window shows it."""
    import bpy

    try:
        image = bpy.data.images.load(str(source), check_existing=False)
    except RuntimeError as exc:
        raise error(f"Blender cannot read the frame {source.name}: {str(exc).strip()}") from exc
    try:
        return save_display(image, scene, target, error=error)
    finally:
        bpy.data.images.remove(image)


def describe_view(scene: Any) -> str:
    """One line for the log: the colour management the conversion used."""
    view, display = scene.view_settings, scene.display_settings
    return (
        f"view {view.view_transform}, look {view.look}, exposure {view.exposure:g}, gamma {view.gamma:g}, "
        f"display {display.display_device}{', curves' if view.use_curve_mapping else ''}"
    )
