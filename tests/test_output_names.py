"""Blender's output-path naming rules (render_contract.output_names) against real bpy 5.0.1's own frame_path."""

from __future__ import annotations

import pytest
from render_contract import output_names
from render_contract.output_names import frame_name, frame_path, node_relative_dir

PATTERNS = [
    "//renders/shot010_####",
    "//renders/shot010",
    "//renders/",
    "//r/a##b##",
    "//r/##/x",
    "//r/shot_####.png",
    "//r/shot_####.PNG",
    "//r/shot_####.jpg",
    "//r/shot_####.exr",
    "//r/shot.",
    "//r/a.b_##",
    "//r/shot_#####",
    "//r/shot_####/",
    "//r/x-##-##.png",
    "//r\\win_###",
    "/abs/x_#",
    "",
]
FORMATS = ["PNG", "JPEG", "OPEN_EXR", "OPEN_EXR_MULTILAYER", "TIFF", "WEBP", "BMP", "TARGA", "JPEG2000", "DPX"]


def test_rules_by_example() -> None:
    assert frame_path("//renders/shot010_####", 1, "PNG") == "//renders/shot010_0001.png"
    assert frame_path("//renders/shot010", 12, "PNG") == "//renders/shot0100012.png"
    assert frame_path("//renders/", 3, "OPEN_EXR") == "//renders/0003.exr"
    assert frame_name("//r/shot_##", -3, "JPEG") == "shot_-03.jpg"
    assert frame_name("//r/shot_##", 12345, "JPEG") == "shot_12345.jpg"
    assert frame_name("//r/shot_####.jpg", 1, "PNG") == "shot_0001.png"  # a known image extension is replaced
    assert frame_name("//r/shot_####.JPEG", 1, "JPEG") == "shot_0001.JPEG"  # the format's own, any case, is kept
    assert frame_name("//r/shot_####", 1, "PNG", use_file_extension=False) == "shot_0001"
    assert frame_name("//r/##/x", 1, "PNG") == "x0001.png"  # '#' in a folder name is not the frame


def test_node_relative_dir_never_leaves_outputs() -> None:
    assert node_relative_dir("//comp/") == "comp"
    assert node_relative_dir("//comp/beauty") == "comp/beauty"
    assert node_relative_dir("//") == ""
    assert node_relative_dir("//../up/./x/") == "up/x"
    assert node_relative_dir("/mnt/farm/comp/") == "_absolute/mnt/farm/comp"
    assert node_relative_dir("C:\\renders\\comp\\") == "_absolute/renders/comp"
    assert node_relative_dir("\\\\server\\share\\comp") == "_absolute/server/share/comp"


@pytest.fixture(scope="module")
def bpy_scene():  # type: ignore[no-untyped-def]
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("use_extension", [True, False])
def test_names_match_blender(bpy_scene, pattern: str, use_extension: bool) -> None:  # type: ignore[no-untyped-def]
    """Every pattern, format and frame (negative, padded past its run) named exactly as Blender names it."""
    render = bpy_scene.render
    render.filepath = pattern
    render.use_file_extension = use_extension
    for file_format in FORMATS:
        settings = render.image_settings
        settings.media_type = "MULTI_LAYER_IMAGE" if file_format == "OPEN_EXR_MULTILAYER" else "IMAGE"
        settings.file_format = file_format
        for frame in (1, 7, -3, 12345):
            blender = render.frame_path(frame=frame).replace("\\", "/").rsplit("/", 1)[-1]
            assert frame_name(pattern, frame, file_format, use_extension) == blender, (pattern, file_format, frame)


def test_every_blender_still_format_has_its_extension(bpy_scene) -> None:  # type: ignore[no-untyped-def]
    settings = bpy_scene.render.image_settings
    settings.media_type = "IMAGE"
    formats = [item.identifier for item in settings.bl_rna.properties["file_format"].enum_items]
    stills = [name for name in formats if name not in ("FFMPEG", "OPEN_EXR_MULTILAYER")]
    assert set(stills) <= set(output_names.STILL_EXTENSIONS), set(stills) - set(output_names.STILL_EXTENSIONS)
