"""Properties > Output > Render on AWS: the settings, the button, the running job, the results, the job list.

Drawing reads only memory (the snapshots :mod:`runtime` keeps, the scene's job list): it never waits.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import bpy
from render_contract.phases import FINISHED_PHASES, Phase

from . import runtime
from .core.tasks import JobView

if TYPE_CHECKING:
    from .properties import RenderOnAwsJob

PHASE_ICONS = {
    Phase.DONE: "CHECKMARK",
    Phase.FAILED: "ERROR",
    Phase.CANCELLED: "CANCEL",
    Phase.STOPPED: "CANCEL",
    "missing files": "ERROR",
}


class RENDER_UL_aws_jobs(bpy.types.UIList):
    """This file's jobs: name, state, submission time."""

    def draw_item(
        self,
        _context: bpy.types.Context,
        layout: bpy.types.UILayout,
        _data: object,
        item: RenderOnAwsJob,
        _icon: int,
        _active_data: object,
        _active_propname: str,
        _index: int = 0,
    ) -> None:
        row = layout.row(align=True)
        row.label(text=item.job_name or item.job_id or "job", icon=PHASE_ICONS.get(item.state, "RENDER_ANIMATION"))
        row.label(text=item.state)
        row.label(text=item.submitted)


class RENDER_PT_aws(bpy.types.Panel):
    bl_label = "Render on AWS"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "output"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        scene = context.scene
        props = scene.render_on_aws

        col = layout.column()
        col.prop(props, "job_name", placeholder=bpy.path.display_name_from_filepath(bpy.data.filepath) or "untitled")
        col.prop(props, "use_frame_range")
        sub = col.column(align=True)
        if props.use_frame_range:
            sub.prop(props, "frame_start")
            sub.prop(props, "frame_end")
        else:
            sub.label(text=f"Scene range {scene.frame_start}-{scene.frame_end}, step {scene.frame_step}")
        row = col.row(heading="Frames per Job")
        row.prop(props, "frames_per_job_auto", text="Auto")
        sub = row.row()
        sub.active = not props.frames_per_job_auto
        sub.prop(props, "frames_per_job", text="")
        col.prop(props, "allow_scripts")
        col.prop(props, "blender_runtime")
        col.prop(props, "download_to_output_path")

        row = layout.row()
        row.scale_y = 1.5
        row.operator("render.aws_submit", icon="RENDER_ANIMATION")
        if not bpy.data.filepath:
            layout.label(text="Save the file first", icon="INFO")

        item = props.active_job
        if item is not None:
            draw_job(layout.box(), item, runtime.VIEWS.get(item.key))

        layout.label(text="Jobs of this file")
        row = layout.row()
        row.template_list("RENDER_UL_aws_jobs", "", props, "jobs", props, "active_job_index", rows=3)
        row.operator("render.aws_remove_job", text="", icon="X")


def draw_job(layout: bpy.types.UILayout, item: RenderOnAwsJob, view: JobView | None) -> None:
    """One job: live progress while it runs, results or the failure after."""
    phase = view.phase if view is not None else item.state
    running = runtime.active(item.key)
    layout.use_property_split = False
    header = layout.row()
    header.label(text=item.job_name, icon=PHASE_ICONS.get(phase, "RENDER_ANIMATION"))
    if item.job_id:
        header.label(text=item.job_id)

    if view is not None and running:
        text = view.text + (f", {view.eta_text}" if view.eta_text else "")
        layout.progress(factor=view.factor, type="BAR", text=text)
    elif phase not in FINISHED_PHASES and not running:
        layout.label(text=f"{phase} (not followed in this session: reopen the file to reattach)", icon="INFO")
    else:
        layout.label(text=view.text if view is not None else phase)

    if view is not None and phase == "missing files":
        col = layout.column(align=True)
        for line in view.missing[:20]:
            col.label(text=line, icon="LIBRARY_DATA_BROKEN")
        if len(view.missing) > 20:
            col.label(text=f"... and {len(view.missing) - 20} more")
        row = layout.row(align=True)
        op = row.operator("render.aws_missing_decision", text="Submit Anyway", icon="CHECKMARK")
        op.key, op.submit_anyway = item.key, True
        op = row.operator("render.aws_missing_decision", text="Stop", icon="CANCEL")
        op.key, op.submit_anyway = item.key, False

    if view is not None and view.deliveries:
        col = layout.column(align=True)
        col.label(text="Will come back:", icon="FILE_IMAGE")
        for line in view.deliveries:
            for part in line.split("; "):
                col.label(text=part)

    if view is not None and view.python_use:
        col = layout.column(align=True)
        col.label(text=f"{len(view.python_use)} thing(s) need Python, which this job does not run:", icon="ERROR")
        for line in view.python_use[:8]:
            col.label(text=line)
        col.label(text='Resubmit with "Run this file\'s Python scripts on the farm" to run them')

    blender = (view.blender if view is not None else "") or item.blender
    if blender:
        verb = "Rendered" if phase in FINISHED_PHASES else "Renders"
        layout.label(text=f"{verb} with Blender {blender}", icon="BLENDER")
    if view is not None and view.runtime_notices:
        col = layout.column(align=True)
        for notice in view.runtime_notices:
            name, _, message = notice.partition(": ")
            col.label(text=f"{name}:", icon="ERROR")
            col.label(text=message[:200])
    if view is not None and view.unbaked:
        col = layout.column(align=True)
        col.label(text=f"{len(view.unbaked)} simulation(s) are not baked (UnbakedSimulation):", icon="ERROR")
        for line in view.unbaked[:8]:
            col.label(text=line)
        if len(view.unbaked) > 8:
            col.label(text=f"... and {len(view.unbaked) - 8} more")
        col.label(text="Chunks start mid-shot, so these render wrong: bake them (Physics > Bake) and submit again")

    draw_flipbook(layout, item, view)

    if running:
        op = layout.operator("render.aws_cancel", icon="CANCEL")
        op.key = item.key
    elif phase in (Phase.FAILED, Phase.CANCELLED) and item.execution_arn:
        layout.operator("render.aws_resume", icon="FILE_REFRESH").key = item.key

    if phase == Phase.DONE:
        row = layout.row(align=True)
        row.operator("render.aws_open_video", icon="SEQUENCE").key = item.key
        row.operator("render.aws_open_folder", icon="FILE_FOLDER").key = item.key
    if phase == Phase.FAILED or item.error:
        col = layout.column(align=True)
        col.alert = phase == Phase.FAILED
        if item.error:
            col.label(text=f"{item.error}: {item.cause}"[:200], icon="ERROR")
        if item.log_uri:
            row = col.row(align=True)
            row.label(text=f"Worker errors: {item.log_uri}")
            row.operator("render.aws_copy_text", text="", icon="COPYDOWN").text = item.log_uri
        if item.log_group:
            row = col.row(align=True)
            row.label(text=f"Batch logs: CloudWatch log group {item.log_group}")
            row.operator("render.aws_copy_text", text="", icon="COPYDOWN").text = item.log_group
    if item.usage:
        layout.label(text=f"Compute: {item.usage}", icon="MEMORY")


def draw_flipbook(layout: bpy.types.UILayout, item: RenderOnAwsJob, view: JobView | None) -> None:
    """The preview image: the latest frame, or while playing the flipbook's frame, with Play/Pause."""
    image = bpy.data.images.get(runtime.PREVIEW_IMAGE)
    if image is None or view is None or not view.preview_path or image.preview is None:
        return
    if os.path.dirname(bpy.path.abspath(image.filepath)) != os.path.dirname(view.preview_path):
        return  # the one preview image shows another job's frame (the job loaded last): not this job's
    layout.template_icon(icon_value=image.preview.icon_id, scale=8.0)
    book = runtime.FLIPBOOKS.get(item.key)
    row = layout.row(align=True)
    if book is not None and book.done:
        if book.playing:
            op = row.operator("render.aws_flipbook", text="Pause", icon="PAUSE")
            op.key, op.play = item.key, False
            held = "" if book.shown == book.frame else f" (holds {book.shown})"
            row.label(text=f"Frame {book.frame}{held}, {book.fps:g} fps")
        else:
            op = row.operator("render.aws_flipbook", text="Play", icon="PLAY")
            op.key, op.play = item.key, True
            row.label(text=f"{len(book.done)}/{len(book.planned)} previews")
    if view.last_frame is not None and (book is None or not book.playing):
        row.label(text=f"Latest frame: {view.last_frame}")


CLASSES = (RENDER_UL_aws_jobs, RENDER_PT_aws)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
