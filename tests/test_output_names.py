"""Blender's output-path naming rules (render_contract.output_names) against real bpy 5.0.1's own frame_path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import ModuleType

import pytest
from render_contract import output_names
from render_contract.output_names import frame_name, frame_path, node_relative_dir
from render_contract.plan import Plan
from render_on_aws.core import deliveries

from tests.test_frame_counter import app  # noqa: F401 (the frame counter loaded as the Lambda runtime loads it)

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


OUTPUT_SETTINGS = {
    "png16": ("//renders/shot010_####", True, "IMAGE", "PNG", {"color_depth": "16", "color_mode": "RGBA"}),
    "jpeg": ("//r/j_", False, "IMAGE", "JPEG", {"color_mode": "BW", "quality": 37}),
    "exr": ("/abs/renders/", True, "IMAGE", "OPEN_EXR", {"color_depth": "16", "exr_codec": "DWAA"}),
    "multilayer": ("//ml/x_##", True, "MULTI_LAYER_IMAGE", "OPEN_EXR_MULTILAYER", {"exr_codec": "PIZ"}),
    "tiff": ("//t/", True, "IMAGE", "TIFF", {"color_depth": "16", "color_mode": "RGB"}),
    "webp": ("//w/w_#", True, "IMAGE", "WEBP", {"quality": 80, "color_mode": "RGBA"}),
}
WRITE_SETTINGS = """
import bpy, json, sys
for name, (path, use_ext, media, fmt, extra) in json.loads(sys.argv[1]).items():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.filepath = path
    scene.render.use_file_extension = use_ext
    settings = scene.render.image_settings
    settings.media_type = media
    settings.file_format = fmt
    for key, value in extra.items():
        setattr(settings, key, value)
    bpy.ops.wm.save_as_mainfile(filepath=f"{sys.argv[2]}/{name}.blend")
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
scene.compositing_node_group = tree
for name, directory, muted in (("Beauty", "//comp/", False), ("Muted", "//muted/", True), ("Abs", "/farm/x/", False)):
    node = tree.nodes.new("CompositorNodeOutputFile")
    node.name, node.directory, node.file_name, node.mute = name, directory, "img_", muted
bpy.ops.wm.save_as_mainfile(filepath=f"{sys.argv[2]}/nodes.blend")
"""


def test_the_frame_counter_reads_the_output_settings_from_the_file(tmp_path: Path) -> None:
    """r.pic, the use_file_extension bit and im_format's depth, planes, quality and codec, read from DNA with BAT,
    equal what bpy set (files written by bpy 5.0.1)."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-c", WRITE_SETTINGS, json.dumps(OUTPUT_SETTINGS), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lambda" / "frame_counter"))
    import blend_facts

    for name, (path, use_ext, _media, fmt, extra) in OUTPUT_SETTINGS.items():
        scene = blend_facts.read_facts(tmp_path / f"{name}.blend").scene
        assert scene.file_format == fmt, name
        output = scene.output
        assert (output.path, output.use_file_extension) == (path, use_ext), name
        for key, value in extra.items():
            assert getattr(output, key) == value, (name, key)
        assert output.file_output_nodes == ()
    nodes = blend_facts.read_facts(tmp_path / "nodes.blend").scene.output.file_output_nodes
    assert nodes == ("Beauty: //comp/img_", "Abs: /farm/x/img_")


def make_plan(**changes: object) -> Plan:
    plan = Plan(
        job_id="job-1",
        job_name="Shot 10",
        scene="Scene",
        frame_start=1,
        frame_end=3,
        frame_step=1,
        fps_num=24,
        fps_den=1,
        engine="CYCLES",
        resolution_x=32,
        resolution_y=18,
        resolution_percentage=100,
        file_format="PNG",
        frame_extension="png",
        has_camera=True,
        blender_version="5.0.1",
        input_uri="s3://b/cas/sha256/" + "0" * 64,
        main_file="shot.blend",
        output_uri="s3://b/jobs/job-1",
        video_key="jobs/job-1/Shot_10.mp4",
        frames_per_job=3,
        frames_per_job_raised=False,
        output_path="//renders/shot010_####",
        color_mode="RGBA",
        color_depth="16",
    )
    return dataclasses.replace(plan, **changes)  # type: ignore[arg-type]


def test_what_will_come_back_is_said_from_the_plan() -> None:
    plan = make_plan()
    assert deliveries.describe(plan, "/r/job-1/") == [
        "frames: 3 x PNG 16-bit RGBA, named shot010_0001.png ... shot010_0003.png, into /r/job-1/",
        "video: Shot_10.mp4, an H.264 preview of the frames as the Render window shows them",
    ]
    nodes = make_plan(file_output_nodes=["File Output: //comp/beauty/img_"])
    assert deliveries.describe(nodes)[1] == (
        "video: Shot_10.mp4, an H.264 preview of the frames as the Render window shows them; 1 compositor File "
        "Output node(s) (File Output: //comp/beauty/img_): their files for each frame, with their own names and "
        "sub-folders"
    )
    quicktime = make_plan(video_container="QUICKTIME", video_key="jobs/job-1/shot.mov", video_audio="AAC 192 kb/s")
    assert deliveries.describe(quicktime)[1] == (
        "video: shot.mov, the scene's QUICKTIME movie (its codec, quality and keyframes); sound AAC 192 kb/s from "
        "the sequencer, mixed down on the farm (none without sound strips)"
    )
    silent = make_plan(video_container="MKV", video_key="jobs/job-1/shot.mkv", video_audio="NONE")
    assert deliveries.describe(silent)[1].endswith("; no sound (the scene's audio codec is None)")
    movie = make_plan(file_format="FFMPEG", output_path="//out/", color_depth="8", color_mode="RGB")
    assert deliveries.describe(movie)[0] == (
        f"frames: 3 x PNG RGB(A) (the scene asks for FFMPEG), named 0001.png ... 0003.png, into "
        f"{deliveries.DEFAULT_DESTINATION}"
    )
    exr = make_plan(file_format="OPEN_EXR_MULTILAYER", frame_extension="exr", color_depth="32", exr_codec="PIZ")
    assert deliveries.describe_format(exr) == "multilayer OpenEXR 32-bit float RGBA PIZ (every view layer and pass)"
    assert exr.stitch_extension == "png" and plan.stitch_extension == "png"
    jpeg = make_plan(file_format="JPEG", frame_extension="jpg", color_mode="RGB", quality=90, use_file_extension=False)
    assert deliveries.describe(jpeg)[0].startswith("frames: 3 x JPEG RGB quality 90, named shot010_0001 ... ")
    assert deliveries.frame_names(jpeg) == {f"jobs/job-1/frames/00000{f}.jpg": f"shot010_000{f}" for f in (1, 2, 3)}


def test_output_folder_resolves_like_blender() -> None:
    root = Path("/home/artist/shots")
    assert deliveries.output_folder(make_plan(), root) == root / "renders"
    assert deliveries.output_folder(make_plan(output_path="//../out/a_#"), root) == root / ".." / "out"
    assert deliveries.output_folder(make_plan(output_path="/farm/out/"), root) == Path("/farm/out/")
    assert deliveries.output_folder(make_plan(output_path=""), root) == root


def test_an_old_plan_without_output_fields_names_frames_as_blender_does_for_an_empty_path() -> None:
    data = json.loads(make_plan().to_json())
    for key in ("output_path", "use_file_extension", "color_mode", "color_depth", "quality", "exr_codec"):
        data.pop(key)
    old = Plan.from_json(json.dumps(data))
    assert deliveries.frame_name(old, 7) == "0007.png"


TEMPLATED = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
scene.render.fps, scene.render.fps_base = 30, 1.001
scene.render.resolution_percentage = 50
scene.camera.name = "Cam Main"
scene.render.filepath = "//{blend_name}/{scene_name}_{camera_name}_{resolution_x}x{resolution_y}_{fps}_{{v2}}_####"
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])
print("RESULT" + json.dumps([scene.render.frame_path(frame=f) for f in (1, 12)]))
"""


def test_blender_5_path_templates_are_filled_as_blender_fills_them(
    tmp_path: Path,
    app: ModuleType,  # noqa: F811 (the frame counter's fixture)
) -> None:
    """``{blend_name}``, ``{scene_name}``, ``{camera_name}``, ``{resolution_x}``, ``{fps}`` and ``{{`` in the scene's
    output path: the plan's path names frames exactly as bpy's frame_path does."""
    import subprocess
    import sys

    from tests.conftest import make_scene

    base = make_scene(tmp_path / "base.blend", "--frame-end", "2", "--resolution", "32", "18")
    shot = tmp_path / "shot_v3.blend"
    done = subprocess.run(
        [sys.executable, "-c", TEMPLATED, str(base), str(shot)], check=True, capture_output=True, text=True
    )
    blender = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))[6:])
    import blend_facts

    scene = blend_facts.read_facts(shot).scene
    pattern = app.output_path(scene, "shots/shot_v3.blend")
    assert "{" not in pattern.replace("{v2}", "")
    ours = [str(tmp_path / frame_path(pattern, f, "PNG")[2:]) for f in (1, 12)]
    assert ours == blender


def test_templates_blender_refuses_or_formats_are_not_guessed() -> None:
    variables = {"scene_name": "Scene"}
    assert output_names.expand_templates("//{scene_name}/{{x}}_##", variables) == "//Scene/{x}_##"
    for bad in ("//{nope}_#", "//{scene_name:##}_#", "//a{b", "//a}b"):
        with pytest.raises(ValueError):
            output_names.expand_templates(bad, variables)
