"""What the add-on keeps in the .blend: the submit settings and this file's job list (ids, never secrets).

The execution ARN and job id are stored so that reopening the file reattaches to an unfinished job.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, PointerProperty, StringProperty
from render_contract.phases import Phase
from render_contract.runtimes import RUNTIMES

FILES_BLENDER = "FILE"
"""The runtime choice that follows the file (the series that saved it): the default."""
RUNTIME_ITEMS = [
    (FILES_BLENDER, "The File's", "Render with the Blender series that saved the file (this Blender's, for a submit)"),
    *(
        (series, f"Blender {series}", f"Render with Blender {version} whatever saved the file")
        for series, version in RUNTIMES.items()
    ),
]


class RenderOnAwsJob(bpy.types.PropertyGroup):
    """One past or running job of this file (the UIList's rows)."""

    key: StringProperty(name="Key", description="The add-on's handle for the job (its id once submitted)")
    job_id: StringProperty(name="Job ID")
    execution_arn: StringProperty(name="Execution ARN")
    job_name: StringProperty(name="Name")
    state: StringProperty(name="State", default=Phase.PREPARING.value)
    submitted: StringProperty(name="Submitted", description="Local time of the submission")
    connection: StringProperty(name="Connection", description="Where it runs: AWS region and stack, or local")
    output_dir: StringProperty(name="Output folder", subtype="DIR_PATH")
    video_path: StringProperty(name="Video", subtype="FILE_PATH")
    frames_dir: StringProperty(name="Frames", subtype="DIR_PATH")
    output_root: StringProperty(
        name="Output path root",
        description="The .blend's folder when the job downloads into the scene's output path (empty: its own folder)",
        subtype="DIR_PATH",
    )
    error: StringProperty(name="Error")
    cause: StringProperty(name="Cause")
    log_uri: StringProperty(name="Log location")
    log_group: StringProperty(name="Log group")
    usage: StringProperty(name="Compute")
    blender: StringProperty(name="Blender", description="The Blender version the farm rendered the job with")


class RenderOnAwsSceneSettings(bpy.types.PropertyGroup):
    job_name: StringProperty(name="Job Name", description="Name of the job and its video (default: the file's name)")
    use_frame_range: BoolProperty(
        name="Override Frame Range", description="Render another range than the scene's", default=False
    )
    frame_start: IntProperty(name="Start", default=1, min=0)
    frame_end: IntProperty(name="End", default=250, min=0)
    frames_per_job_auto: BoolProperty(
        name="Auto",
        description="Let the stack split the frames so that every parallel slot gets one chunk",
        default=True,
    )
    frames_per_job: IntProperty(name="Frames per Job", description="Frames one Batch job renders", default=10, min=1)
    allow_scripts: BoolProperty(
        name="Run this file's Python scripts on the farm",
        description="Registered scripts and Python-expression drivers run on the farm for this job, as in your "
        "Blender with auto-run on. They run with the render worker's AWS role: only for files you trust",
        default=False,
    )
    blender_runtime: EnumProperty(
        name="Farm's Blender",
        description="Which Blender renders on the farm: the file's own series (frames match your F12), or another",
        items=RUNTIME_ITEMS,
        default=FILES_BLENDER,
    )
    download_to_output_path: BoolProperty(
        name="Download into the Output Path",
        description="Write the frames and File Output node files where the scene's output paths put them, as Render "
        "Animation would (files of the same names there are replaced). Off: into <output folder>/<job id>/, so two "
        "jobs never overwrite each other",
        default=False,
    )
    jobs: CollectionProperty(type=RenderOnAwsJob)
    active_job_index: IntProperty(name="Job", default=-1)

    @property
    def active_job(self) -> RenderOnAwsJob | None:
        if 0 <= self.active_job_index < len(self.jobs):
            return self.jobs[self.active_job_index]
        return None


CLASSES = (RenderOnAwsJob, RenderOnAwsSceneSettings)
_register, _unregister = bpy.utils.register_classes_factory(CLASSES)


def register() -> None:
    _register()
    bpy.types.Scene.render_on_aws = PointerProperty(type=RenderOnAwsSceneSettings)


def unregister() -> None:
    del bpy.types.Scene.render_on_aws
    _unregister()
