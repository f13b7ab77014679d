"""What a job delivers and where each file lands, decided from the plan (bpy-free, network-free).

The farm keeps one key per frame (``jobs/<id>/frames/<NNNNNN>.<ext>``); the artist gets the scene's own names
back: the output path's file-name pattern (``#`` padding, Blender's 4 digits, the extension), by the rules of
:mod:`render_contract.output_names`. The same plan gives the one or two lines the CLI prints and the panel shows
before the render ("what will come back"), so what is promised and what is downloaded cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from render_contract import layout, output_names
from render_contract.plan import STILL_FORMATS, Plan

DEFAULT_DESTINATION = "<output folder>/<job id>/"
FORMAT_LABELS = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "OPEN_EXR": "OpenEXR",
    "OPEN_EXR_MULTILAYER": "multilayer OpenEXR",
    "TIFF": "TIFF",
    "WEBP": "WebP",
    "BMP": "BMP",
}


def written_format(plan: Plan) -> str:
    """The format of the frames the farm writes: the scene's own still format, else PNG (movies, odd formats)."""
    if STILL_FORMATS.get(plan.file_format) == plan.frame_extension:
        return plan.file_format
    return next(name for name, ext in STILL_FORMATS.items() if ext == plan.frame_extension)


def frame_name(plan: Plan, frame: int) -> str:
    """The file name the scene's output path gives ``frame`` (as F12 Render Animation names it)."""
    return output_names.frame_name(plan.output_path, frame, written_format(plan), plan.use_file_extension)


def frame_names(plan: Plan) -> dict[str, str]:
    """Each planned frame's key -> its file name."""
    return {
        layout.frame_key(plan.job_id, frame, plan.frame_extension): frame_name(plan, frame) for frame in plan.frames
    }


def output_folder(plan: Plan, blend_folder: Path) -> Path:
    """The folder the scene's output path names, ``//`` being ``blend_folder`` (Render Animation's folder)."""
    folder, _name = output_names.split(plan.output_path)
    if output_names.is_absolute(folder):
        return Path(folder)
    return blend_folder.joinpath(*output_names.relative_folder_parts(folder))


def describe_format(plan: Plan) -> str:
    """``PNG 16-bit RGBA``, ``JPEG RGB quality 90``, ``multilayer OpenEXR 32-bit RGBA PIZ (every view layer and
    pass)``; the scene's settings as the frame counter read them (the worker keeps them as they are)."""
    name = written_format(plan)
    kept = name == plan.file_format
    parts = [FORMAT_LABELS.get(name, name)]
    if kept and plan.color_depth and name not in ("JPEG", "WEBP", "BMP"):
        parts.append(f"{plan.color_depth}-bit" + (" float" if plan.color_depth == "32" else ""))
    if kept and plan.color_mode:
        parts.append(plan.color_mode)
    elif not kept:
        parts.append("RGB(A)")
    if kept and name in ("JPEG", "WEBP") and plan.quality:
        parts.append(f"quality {plan.quality}")
    if kept and name.startswith("OPEN_EXR") and plan.exr_codec:
        parts.append(plan.exr_codec)
    if name == "OPEN_EXR_MULTILAYER":
        parts.append("(every view layer and pass)")
    return " ".join(parts)


def describe(plan: Plan, destination: str = DEFAULT_DESTINATION) -> list[str]:
    """What will come back, in two lines: the frames (format, names, where) and the rest (video, node files)."""
    frames = plan.frames
    first, last = frame_name(plan, frames[0]), frame_name(plan, frames[-1])
    names = first if len(frames) == 1 else f"{first} ... {last}"
    instead = "" if written_format(plan) == plan.file_format else f" (the scene asks for {plan.file_format})"
    video = posixpathname(plan.video_key) or f"{plan.job_name}.mp4"
    if plan.video_container:
        if plan.video_audio == "NONE":
            sound = "no sound (the scene's audio codec is None)"
        elif plan.video_audio:
            sound = f"sound {plan.video_audio} from the sequencer, mixed down on the farm (none without sound strips)"
        else:
            sound = "its sound when it has an audio codec and sound strips, mixed down on the farm"
        second = f"video: {video}, the scene's {plan.video_container} movie (its codec, quality and keyframes); {sound}"
    else:
        second = f"video: {video}, an H.264 preview of the frames as the Render window shows them"
    if plan.file_output_nodes:
        nodes = ", ".join(plan.file_output_nodes[:3]) + (", ..." if len(plan.file_output_nodes) > 3 else "")
        second += (
            f"; {len(plan.file_output_nodes)} compositor File Output node(s) ({nodes}): their files for each frame, "
            "with their own names and sub-folders"
        )
    return [f"frames: {len(frames)} x {describe_format(plan)}{instead}, named {names}, into {destination}", second]


def posixpathname(key: str) -> str:
    return key.rsplit("/", 1)[-1] if key else ""
