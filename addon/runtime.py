"""The glue between background jobs and Blender's main thread: the job registry, the timer, load_post.

Threads (:class:`core.tasks.JobTask`) never touch bpy. They publish snapshots onto :data:`MAIN`; :func:`tick`,
run by ``bpy.app.timers`` on the main thread, drains it, copies what must persist (job id, execution ARN,
state, result paths) into the scene's job list, loads the preview image and tags the Properties editor for
redraw. Tests and the benchmark call :func:`tick` directly: timers do not fire in bpy without a window.

The flipbook: each job with previews has a :class:`~.core.flipbook.Flipbook` (main thread only); Play starts
:func:`flipbook_tick` as a timer at the scene's frame rate, which calls :func:`flipbook_step` (tests call it
directly) to show the nearest done preview of the next frame in the one preview image.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import bpy
from render_contract.phases import FINISHED_PHASES, Phase

from .core import tasks
from .core.connection import ConnectionSettings
from .core.connection import test_connection as test_connection_settings
from .core.flipbook import DEFAULT_FPS, Flipbook
from .core.mainthread import MainThreadQueue
from .core.preparing import SubmitRequest
from .core.previews import preview_path

if TYPE_CHECKING:
    from .properties import RenderOnAwsJob

TICK_ACTIVE = 0.1
TICK_IDLE = 0.5
PREVIEW_IMAGE = "Render on AWS preview"
PREVIEW_DIR = Path(tempfile.gettempdir()) / "render_on_aws_previews"

MAIN = MainThreadQueue()
TASKS: dict[str, tasks.JobTask] = {}
"""Running (and recently ended) jobs of this Blender session, by key. Memory only."""
VIEWS: dict[str, tasks.JobView] = {}
"""The latest snapshot of each job, as the panel draws it (main thread only)."""
FLIPBOOKS: dict[str, Flipbook] = {}
"""Each job's flipbook playback (main thread only)."""


@dataclass
class ConnectionMessage:
    text: str = ""
    ok: bool | None = None


CONNECTION_MESSAGE = ConnectionMessage()


# ---- jobs ------------------------------------------------------------------------------------------------
def connection_label(settings: ConnectionSettings) -> str:
    if settings.endpoint:
        return f"local {settings.endpoint} ({settings.stack})"
    return f"AWS {settings.region or 'default region'} ({settings.stack})"


def start_submit(
    scene: bpy.types.Scene,
    settings: ConnectionSettings,
    request: SubmitRequest,
    output_dir: Path,
    work_dir: Path,
    output_root: Path | None = None,
) -> str:
    """Adds the job to the scene's list and starts its thread; returns the job's key."""
    key = f"pending-{time.time_ns():x}"
    props = scene.render_on_aws
    item = props.jobs.add()
    item.key = key
    item.job_name = request.job_name or request.blend.stem
    item.state = Phase.PREPARING
    item.submitted = datetime.now().strftime("%Y-%m-%d %H:%M")
    item.connection = connection_label(settings)
    item.output_dir = str(output_dir)
    item.output_root = str(output_root or "")
    props.active_job_index = len(props.jobs) - 1
    options = tasks.default_options(settings, output_dir, PREVIEW_DIR, work_dir=work_dir)
    options.output_root = output_root
    _start(tasks.JobTask(key, settings, _publisher(), options, request=request, job_name=item.job_name))
    return key


def attach(scene: bpy.types.Scene, item: RenderOnAwsJob, settings: ConnectionSettings) -> str | None:
    """Follows an unfinished job of the scene again (after reopening its file)."""
    if not item.execution_arn or active(item.key):
        return None
    output_dir = Path(item.output_dir) if item.output_dir else Path(tempfile.mkdtemp(prefix="render_on_aws_"))
    options = tasks.default_options(settings, output_dir, PREVIEW_DIR)
    options.output_root = Path(item.output_root) if item.output_root else None
    task = tasks.JobTask(
        item.key, settings, _publisher(), options, job_name=item.job_name, execution_arn=item.execution_arn
    )
    _start(task)
    return item.key


def start_resume(item: RenderOnAwsJob, settings: ConnectionSettings) -> str | None:
    """Runs a failed or cancelled job again (only its missing frames) and follows it; the list keeps one entry."""
    if not item.execution_arn or active(item.key):
        return None
    output_dir = Path(item.output_dir) if item.output_dir else Path(tempfile.mkdtemp(prefix="render_on_aws_"))
    options = tasks.default_options(settings, output_dir, PREVIEW_DIR)
    options.output_root = Path(item.output_root) if item.output_root else None
    item.error = item.cause = ""
    task = tasks.JobTask(
        item.key, settings, _publisher(), options, job_name=item.job_name, execution_arn=item.execution_arn, resume=True
    )
    _start(task)
    return item.key


def _start(task: tasks.JobTask) -> None:
    TASKS[task.key] = task
    VIEWS[task.key] = task.view
    task.start()
    ensure_timer()


def _publisher():
    def publish(view: tasks.JobView) -> None:
        MAIN.call(_apply, view)

    return publish


def cancel(key: str) -> bool:
    task = TASKS.get(key)
    if task is None or not task.is_alive():
        return False
    task.request_cancel()
    return True


def decide_missing(key: str, submit_anyway: bool) -> bool:
    task = TASKS.get(key)
    if task is None:
        return False
    task.decide_missing(submit_anyway)
    return True


def active(key: str) -> bool:
    task = TASKS.get(key)
    return task is not None and task.is_alive()


def any_active() -> bool:
    return any(task.is_alive() for task in TASKS.values())


def _apply(view: tasks.JobView) -> None:
    """Main thread: remember the snapshot and persist what reattaching and the job list need."""
    VIEWS[view.key] = view
    for scene in bpy.data.scenes:
        props = getattr(scene, "render_on_aws", None)
        if props is None:
            continue
        for item in props.jobs:
            if item.key != view.key:
                continue
            _store(item, view)
    book = sync_flipbook(view)
    if view.preview_path and (book is None or not book.playing):
        load_preview(view.preview_path)


def _store(item: RenderOnAwsJob, view: tasks.JobView) -> None:
    """Copies only changed values: every RNA write is cheap, but there can be many snapshots a second."""
    values = {
        "job_id": view.job_id,
        "execution_arn": view.execution_arn,
        "job_name": view.job_name or item.job_name,
        "state": view.phase,
        "video_path": view.video_path,
        "frames_dir": view.frames_dir,
        "error": view.error,
        "cause": view.cause[:1000],
        "log_uri": view.log_uri,
        "log_group": view.log_group,
        "usage": view.usage_text,
        "blender": view.blender,
    }
    for name, value in values.items():
        if value and getattr(item, name) != value:
            setattr(item, name, value)


def load_preview(path: str) -> bpy.types.Image | None:
    """One image datablock for the preview, reloaded per frame (no user: never saved into the file)."""
    image = bpy.data.images.get(PREVIEW_IMAGE)
    try:
        if image is None:
            image = bpy.data.images.load(path, check_existing=True)
            image.name = PREVIEW_IMAGE
        elif bpy.path.abspath(image.filepath) != path:
            image.filepath = path
            image.reload()
        preview = image.preview_ensure()
        preview.reload()
    except (RuntimeError, ReferenceError):
        return None
    return image


# ---- the flipbook ----------------------------------------------------------------------------------------
def sync_flipbook(view: tasks.JobView) -> Flipbook | None:
    """The job's flipbook, made or brought up to date from a snapshot (its frames, rate and previews)."""
    if not len(view.planned):
        return FLIPBOOKS.get(view.key)
    book = FLIPBOOKS.get(view.key)
    if book is None or book.planned != view.planned:
        book = FLIPBOOKS[view.key] = Flipbook(view.planned, view.fps or DEFAULT_FPS)
    if view.fps:
        book.fps = view.fps
    book.update(view.preview_frames)
    return book


def flipbook_play(key: str, play: bool) -> bool:
    """Starts (or pauses) the job's flipbook; False when it has no preview yet."""
    book = FLIPBOOKS.get(key)
    if book is None or not book.done:
        return False
    book.playing = play
    if play and not bpy.app.timers.is_registered(flipbook_tick):
        bpy.app.timers.register(flipbook_tick, first_interval=book.interval, persistent=True)
    return True


def flipbook_step(key: str) -> int | None:
    """One frame of playback: the next frame of the shot, showing its nearest done preview; returns that
    preview's frame (None when the job has none)."""
    book, view = FLIPBOOKS.get(key), VIEWS.get(key)
    if book is None or view is None:
        return None
    shown = book.step()
    if shown is not None:
        load_preview(str(preview_path(Path(view.preview_dir), view.job_id, shown)))
    return shown


def flipbook_tick() -> float | None:
    """The playback timer: steps every playing flipbook; stops itself when none plays."""
    playing = [key for key, book in FLIPBOOKS.items() if book.playing]
    if not playing:
        return None
    for key in playing:
        flipbook_step(key)
    _redraw()
    return min(FLIPBOOKS[key].interval for key in playing)


def _redraw() -> None:
    if bpy.context.window_manager is None:
        return
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ("PROPERTIES", "PREFERENCES"):
                area.tag_redraw()


# ---- the timer -------------------------------------------------------------------------------------------
def tick() -> float:
    """What the timer runs: drain the queue (a few ms at most), redraw; returns the next interval."""
    if MAIN.drain():
        _redraw()
    return TICK_ACTIVE if any_active() else TICK_IDLE


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_ACTIVE, persistent=True)


# ---- Test connection -------------------------------------------------------------------------------------
def test_connection(settings: ConnectionSettings) -> threading.Thread:
    """Starts the test in a thread; the preferences show :data:`CONNECTION_MESSAGE` when it is back."""
    from render_contract.errors import RenderOnAwsError

    CONNECTION_MESSAGE.text, CONNECTION_MESSAGE.ok = "Testing the connection...", None

    def show(text: str, ok: bool) -> None:
        CONNECTION_MESSAGE.text, CONNECTION_MESSAGE.ok = text, ok

    def work() -> None:
        try:
            MAIN.call(show, test_connection_settings(settings), True)
        except RenderOnAwsError as error:
            MAIN.call(show, f"{error.name}: {error.message}", False)
        except Exception as error:  # plain words for anything botocore raises that the core did not name
            MAIN.call(show, f"ConnectionFailed: {error}", False)

    thread = threading.Thread(target=work, name="render-on-aws test connection", daemon=True)
    thread.start()
    ensure_timer()
    return thread


# ---- reopening a file ------------------------------------------------------------------------------------
@bpy.app.handlers.persistent
def on_load_post(*_args: object) -> None:
    """Reattaches to this file's unfinished jobs: their progress resumes where the panel left it."""
    try:  # the add-on's preferences (preferences.py reads this module, so this one does not import it)
        settings = bpy.context.preferences.addons[__package__].preferences.connection_settings()
    except KeyError:
        return
    for scene in bpy.data.scenes:
        props = getattr(scene, "render_on_aws", None)
        if props is None:
            continue
        for item in props.jobs:
            if item.execution_arn and item.state not in FINISHED_PHASES:
                attach(scene, item, settings)


def register() -> None:
    if on_load_post not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(on_load_post)
    ensure_timer()


def unregister() -> None:
    """Threads end (the jobs keep running on AWS and are reattached when the file is opened again)."""
    if on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(on_load_post)
    for timer in (tick, flipbook_tick):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    for task in TASKS.values():
        task.shutdown.set()
    TASKS.clear()
    VIEWS.clear()
    FLIPBOOKS.clear()
