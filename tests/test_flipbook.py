"""The preview flipbook (issue 17.2): the core's choice of preview per frame and of previews to fetch, the
previews' client, and the add-on playing a finished job's flipbook in real bpy against the local cloud."""

from __future__ import annotations

from pathlib import Path

import pytest
from render_contract import layout
from render_on_aws.core.flipbook import Flipbook, fetch_order, nearest_done

from localcloud.process import LocalCloudProcess
from tests.test_addon import run_blender


# ---- frame -> preview to show ---------------------------------------------------------------------------------
def test_a_done_frame_shows_itself_and_a_missing_one_holds_the_nearest_done() -> None:
    done = [1, 5, 9]
    assert [nearest_done(f, done) for f in range(1, 11)] == [1, 1, 1, 5, 5, 5, 5, 9, 9, 9]
    # a tie (3 is 2 from 1 and from 5) holds the earlier frame rather than jumping ahead
    assert nearest_done(3, done) == 1 and nearest_done(7, done) == 5
    assert nearest_done(-50, done) == 1 and nearest_done(10_000, done) == 9  # before the first, after the last
    assert nearest_done(4, []) is None
    assert nearest_done(4, [4]) == 4


def test_previews_are_fetched_coarse_to_fine() -> None:
    frames = range(1, 17)
    assert fetch_order(frames, [], 5) == [1, 16, 8, 12, 4]  # each fills the largest hold left
    assert fetch_order(frames, [1, 16], 1) == [8]
    assert fetch_order([3, 4], [1, 2, 3], 5) == [4]  # never one already here
    assert fetch_order(frames, [], 0) == [] and fetch_order([], [1], 3) == []
    everything = fetch_order(frames, [], 100)
    assert sorted(everything) == list(frames)


def test_the_flipbook_plays_every_frame_of_the_shot_at_its_rate_and_loops() -> None:
    book = Flipbook(range(1, 25, 2), fps=12.5)  # frames 1, 3, ..., 23
    assert book.frame == 1 and book.shown is None and book.interval == 0.08
    book.update([7, 19, 99])  # a frame outside the plan is ignored
    assert book.done == [7, 19]
    frames, shown = [book.frame], [book.shown]
    for _ in range(11):
        shown.append(book.step())
        frames.append(book.frame)
    assert frames == list(range(1, 25, 2))
    assert shown == [7, 7, 7, 7, 7, 7, 7, 19, 19, 19, 19, 19]  # 13 is as far from 7 as from 19: it holds 7
    assert book.step() == 7 and book.frame == 1  # after the last frame, the first again


def test_fetching_previews_names_the_absent_ones(bucket: str, tmp_path: Path) -> None:
    import boto3
    from render_on_aws.core.jobref import JobRef
    from render_on_aws.core.previews import fetch_previews, preview_path

    s3 = boto3.client("s3")
    job = JobRef("artist-20261205-000000-abcdef", "arn:aws:states:us-east-1:1:execution:m:x", bucket)
    s3.put_object(Bucket=bucket, Key=layout.preview_key(job.job_id, 2), Body=b"\xff\xd8\xff preview")
    fetched = fetch_previews(s3, job, [2, 3], tmp_path)
    assert (fetched.fetched, fetched.unavailable, fetched.calls) == ([2], [3], 2)
    assert preview_path(tmp_path, job.job_id, 2).read_bytes() == b"\xff\xd8\xff preview"
    assert not preview_path(tmp_path, job.job_id, 3).exists()


# ---- the add-on, real bpy ---------------------------------------------------------------------------------------
FLIPBOOK = r"""
use_local()
open_blend(sys.argv[1], sys.argv[2])
bpy.context.scene.render_on_aws.frames_per_job_auto = False
bpy.context.scene.render_on_aws.frames_per_job = 4
bpy.ops.wm.save_mainfile()
bpy.ops.render.aws_submit()
seen = []
def watch():
    v = view()
    if v is not None and v.phase == "rendering":
        seen.append((v.frames_done, len(v.preview_frames)))
    return finished()
drive(watch)
key = job().key
book = runtime.FLIPBOOKS[key]
done = list(book.done)
refused = bpy.ops.render.aws_flipbook(key="no-such-job", play=True)
played = bpy.ops.render.aws_flipbook(key=key, play=True)
timer = bpy.app.timers.is_registered(runtime.flipbook_tick)
steps = []
for _ in range(len(book.planned)):
    shown = runtime.flipbook_step(key)
    image = bpy.data.images[runtime.PREVIEW_IMAGE]
    steps.append((book.frame, shown, Path(bpy.path.abspath(image.filepath)).name, image.size[0]))
# a frame whose preview is gone from the flipbook holds the nearest one
book.update([f for f in book.done if f != 3])
book.position = list(book.planned).index(3) - 1
held = runtime.flipbook_step(key)
bpy.ops.render.aws_flipbook(key=key, play=False)
stopped = runtime.flipbook_tick() is None
result(state=job().state, planned=list(book.planned), fps=book.fps, done=done, steps=steps, held=held,
       refused=sorted(refused), played=sorted(played), timer=timer, stopped=stopped, seen=seen,
       preview_dir=view().preview_dir, job_id=job().job_id)
"""


@pytest.mark.slow
def test_the_panel_plays_the_jobs_flipbook(local_cloud: LocalCloudProcess, tmp_path: Path, tiny_scene: Path) -> None:
    args = f"sys.argv[1:] = {[str(tiny_scene), str(tmp_path / 'out')]!r}\n"
    got = run_blender(args + FLIPBOOK, local_cloud, tmp_path)
    assert got["state"] == "done", got
    assert got["planned"] == [1, 2, 3, 4, 5, 6] and got["fps"] == 24
    assert got["done"] == [1, 2, 3, 4, 5, 6], "every frame's preview is fetched by the end"
    assert got["refused"] == ["CANCELLED"] and got["played"] == ["FINISHED"] and got["timer"]
    # Playing steps through the whole shot, each frame showing its own preview (a JPEG as wide as the 64 px frame).
    assert [(frame, shown) for frame, shown, _, _ in got["steps"]] == [(f % 6 + 1, f % 6 + 1) for f in range(1, 7)]
    assert all(name == f"{shown:06d}.jpg" and width == 64 for _, shown, name, width in got["steps"])
    assert got["held"] == 2 and got["stopped"]
    assert all(previews <= done for done, previews in got["seen"]), "a preview is only asked for a frame in S3"
    assert (Path(got["preview_dir"]) / got["job_id"]).is_dir()
