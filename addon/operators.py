"""The buttons: submit, cancel, resume, the flipbook's play/pause, the missing-files choice, test connection, and
the results (video, frames).

Every operator returns at once: the network work happens in :mod:`runtime`'s threads.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import bpy
from bpy.props import BoolProperty, StringProperty
from render_contract.phases import Phase

from . import preferences, runtime
from .core.preparing import SubmitRequest
from .properties import FILES_BLENDER

RESUMABLE_PHASES = (Phase.FAILED, Phase.CANCELLED)

if TYPE_CHECKING:
    from .properties import RenderOnAwsJob


def selected_job(context: bpy.types.Context, key: str = "") -> RenderOnAwsJob | None:
    """The job an operator acts on: the one named by ``key``, else the one selected in the panel's list."""
    props = context.scene.render_on_aws
    if key:
        return next((item for item in props.jobs if item.key == key), None)
    return props.active_job


def output_dir(scene: bpy.types.Scene, blend: Path) -> Path:
    """The scene's output folder, or ``//render_on_aws/`` next to the .blend when the scene has none.

    Each job downloads into ``<job id>/`` inside it, so jobs never overwrite each other's videos.
    """
    if scene.render.filepath:
        base = Path(bpy.path.abspath(scene.render.filepath))
        folder = base if scene.render.filepath.endswith(("/", "\\")) else base.parent
    else:
        folder = blend.parent / "render_on_aws"
    return folder


def save_copy(blend: Path) -> Path:
    """Saves a copy of the open file to a temp folder; the artist's file, path and unsaved state stay as they were.

    ``relative_remap`` rewrites relative paths so that they still point at the artist's textures from the copy.
    """
    work_dir = Path(tempfile.mkdtemp(prefix="render_on_aws_submit_"))
    copy = work_dir / blend.name
    bpy.ops.wm.save_as_mainfile(filepath=str(copy), copy=True, relative_remap=True, check_existing=False)
    return copy


class RENDER_OT_aws_submit(bpy.types.Operator):
    """Render this file's animation on AWS (uploads a copy of the file; Blender stays responsive)"""

    bl_idname = "render.aws_submit"
    bl_label = "Render on AWS"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not bpy.data.filepath:
            self.report({"ERROR"}, "Save the file first: Render on AWS uploads the saved .blend")
            return {"CANCELLED"}
        scene = context.scene
        props = scene.render_on_aws
        blend = Path(bpy.data.filepath)
        settings = preferences.get(context).connection_settings()
        if props.use_frame_range and props.frame_end < props.frame_start:
            self.report({"ERROR"}, "The frame range override ends before it starts")
            return {"CANCELLED"}
        try:
            copy = save_copy(blend)
        except RuntimeError as error:
            self.report({"ERROR"}, f"Could not save a copy of the file to upload: {error}")
            return {"CANCELLED"}
        job_name = props.job_name.strip() or blend.stem
        request = SubmitRequest(
            blend=copy,
            job_name=job_name,
            frames_per_job="auto" if props.frames_per_job_auto else str(props.frames_per_job),
            frame_start=props.frame_start if props.use_frame_range else None,
            frame_end=props.frame_end if props.use_frame_range else None,
            scene=scene.name,
            allow_scripts=props.allow_scripts,
            blender_version=".".join(str(part) for part in bpy.app.version),
            blender_runtime=None if props.blender_runtime == FILES_BLENDER else props.blender_runtime,
            origin=blend,
        )
        root = blend.parent if props.download_to_output_path else None
        runtime.start_submit(scene, settings, request, output_dir(scene, blend), copy.parent, output_root=root)
        self.report({"INFO"}, f"Submitting {job_name!r} to {runtime.connection_label(settings)}")
        return {"FINISHED"}


class RENDER_OT_aws_cancel(bpy.types.Operator):
    """Stop the job: the upload, or the execution and its Batch jobs"""

    bl_idname = "render.aws_cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    key: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = selected_job(context, self.key)
        if item is None or not runtime.cancel(item.key):
            self.report({"WARNING"}, "This job is not running in this Blender session")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Cancelling {item.job_name}")
        return {"FINISHED"}


class RENDER_OT_aws_resume(bpy.types.Operator):
    """Run the job again: only the frames it lacks are rendered, nothing is uploaded again, then the video"""

    bl_idname = "render.aws_resume"
    bl_label = "Resume"
    bl_options = {"REGISTER"}

    key: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = selected_job(context, self.key)
        if item is None or item.state not in RESUMABLE_PHASES:
            self.report({"WARNING"}, "Only a failed or cancelled job can be resumed")
            return {"CANCELLED"}
        settings = preferences.get(context).connection_settings()
        if runtime.start_resume(item, settings) is None:
            self.report({"WARNING"}, "This job is running already")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Resuming {item.job_name}")
        return {"FINISHED"}


class RENDER_OT_aws_flipbook(bpy.types.Operator):
    """Play the shot so far at the scene's frame rate (frames not rendered yet hold the nearest one), or pause"""

    bl_idname = "render.aws_flipbook"
    bl_label = "Play Flipbook"
    bl_options = {"REGISTER"}

    key: StringProperty(options={"HIDDEN", "SKIP_SAVE"})
    play: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = selected_job(context, self.key)
        if item is None or not runtime.flipbook_play(item.key, self.play):
            self.report({"WARNING"}, "No preview of this job yet")
            return {"CANCELLED"}
        return {"FINISHED"}


class RENDER_OT_aws_missing_decision(bpy.types.Operator):
    """Decide what happens when files the scene uses are missing (before anything is uploaded)"""

    bl_idname = "render.aws_missing_decision"
    bl_label = "Missing Files"
    bl_options = {"REGISTER"}

    key: StringProperty(options={"HIDDEN", "SKIP_SAVE"})
    submit_anyway: BoolProperty(name="Submit Anyway", options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = selected_job(context, self.key)
        if item is None or not runtime.decide_missing(item.key, self.submit_anyway):
            return {"CANCELLED"}
        return {"FINISHED"}


class RENDER_OT_aws_test_connection(bpy.types.Operator):
    """Check the connection settings: credentials, region and stack (in the background)"""

    bl_idname = "render.aws_test_connection"
    bl_label = "Test Connection"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        runtime.test_connection(preferences.get(context).connection_settings())
        self.report({"INFO"}, "Testing the connection...")
        return {"FINISHED"}


class RENDER_OT_aws_open_video(bpy.types.Operator):
    """Open the job's video in a new Video Sequencer scene of this file"""

    bl_idname = "render.aws_open_video"
    bl_label = "Open Video"
    bl_options = {"REGISTER", "UNDO"}

    key: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = selected_job(context, self.key)
        if item is None or not item.video_path or not Path(item.video_path).is_file():
            self.report({"ERROR"}, "The video is not downloaded (yet)")
            return {"CANCELLED"}
        scene = open_video(Path(item.video_path), item.job_name)
        if context.window is not None:
            context.window.scene = scene
            workspace = bpy.data.workspaces.get("Video Editing")
            if workspace is not None:
                context.window.workspace = workspace
        self.report({"INFO"}, f"Opened {item.video_path} in scene {scene.name!r}")
        return {"FINISHED"}


def _has_audio(video: Path) -> bool:
    """Whether Blender's audio library reads a sound from the file (a stills job's preview has none). A Blender
    built without it (bpy 4.2's wheel) can add no sound strip at all, so the video opens as picture only."""
    try:
        import aud  # type: ignore[import-not-found]  # Blender's audio library, part of bpy
    except ImportError:
        return False
    try:
        return aud.Sound(str(video)).length > 0
    except aud.error:
        return False


def open_video(video: Path, name: str) -> bpy.types.Scene:
    """A scene with the video as a movie strip, sized to its length and rate: works without a window too."""
    scene = bpy.data.scenes.new(f"{name} (Render on AWS)")
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # `sequences` before 4.4
    strip = strips.new_movie(name=name, filepath=str(video), channel=1, frame_start=1)
    if _has_audio(video):  # a movie job's video may carry the scene's sound: its own strip, as Add > Movie does
        strips.new_sound(name=f"{name} sound", filepath=str(video), channel=2, frame_start=1)
    scene.frame_start = 1
    scene.frame_end = max(1, strip.frame_final_duration)
    fps = getattr(strip, "fps", 0) or 0
    if fps:
        scene.render.fps = round(fps)
        scene.render.fps_base = round(fps) / fps
    return scene


class RENDER_OT_aws_open_folder(bpy.types.Operator):
    """Open the folder with the downloaded frames in the file browser of your system"""

    bl_idname = "render.aws_open_folder"
    bl_label = "Open Frames Folder"
    bl_options = {"REGISTER"}

    key: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = selected_job(context, self.key)
        folder = (item.frames_dir or item.output_dir) if item is not None else ""
        if not folder or not Path(folder).is_dir():
            self.report({"ERROR"}, "Nothing downloaded yet")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


class RENDER_OT_aws_copy_text(bpy.types.Operator):
    """Copy to the clipboard (a log location, a job id)"""

    bl_idname = "render.aws_copy_text"
    bl_label = "Copy"
    bl_options = {"REGISTER"}

    text: StringProperty(options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        context.window_manager.clipboard = self.text
        return {"FINISHED"}


class RENDER_OT_aws_remove_job(bpy.types.Operator):
    """Remove the selected job from this list (the job and its results on AWS stay)"""

    bl_idname = "render.aws_remove_job"
    bl_label = "Remove from List"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        item = context.scene.render_on_aws.active_job
        return item is not None and not runtime.active(item.key)

    def execute(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.render_on_aws
        props.jobs.remove(props.active_job_index)
        props.active_job_index = min(props.active_job_index, len(props.jobs) - 1)
        return {"FINISHED"}


CLASSES = (
    RENDER_OT_aws_resume,
    RENDER_OT_aws_flipbook,
    RENDER_OT_aws_submit,
    RENDER_OT_aws_cancel,
    RENDER_OT_aws_missing_decision,
    RENDER_OT_aws_test_connection,
    RENDER_OT_aws_open_video,
    RENDER_OT_aws_open_folder,
    RENDER_OT_aws_copy_text,
    RENDER_OT_aws_remove_job,
)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
