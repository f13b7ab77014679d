"""Progressive order (issue 17): the frames that finish first spread over the whole shot, coarse to fine.

Pure: a simulation of the farm, no bpy. W workers each render their chunk's frames one per time step, in list
order (as the worker does); a worker that finishes its chunk takes the next unstarted one, in index order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from render_contract import layout
from render_contract.plan import MAX_ARRAY_SIZE, chunk, coarse_to_fine

MAX_CHUNKS = 16
SLACK = 1
"""Bit-reversal keeps every gap of a prefix of m frames below ``P / 2**k`` (``P`` the power of two at or above
the frame count, ``2**k <= m``), which is under twice the spacing ``total / m`` give or take the frames cut off
above ``total``; the measured worst over 1..300 frames and 1..16 chunks is 1.75x. One frame of slack covers
the rounding of tiny shots (3 frames, 1 done: a gap of 2 is 2/3 spacing, but integer)."""


def longest_gap(done: set[int], total: int) -> int:
    best = run = 0
    for index in range(total):
        run = 0 if index in done else run + 1
        best = max(best, run)
    return best


def simulate(chunks: list[list[int]], workers: int) -> Iterator[set[int]]:
    """The frames done after each time step."""
    queue = list(range(len(chunks)))
    active: list[list[int]] = []
    done: set[int] = set()
    while queue or active:
        while len(active) < workers and queue:
            active.append(list(chunks[queue.pop(0)]))
        for frames in active:
            done.add(frames.pop(0))
        active = [frames for frames in active if frames]
        yield done


@pytest.mark.parametrize("chunk_count", range(1, MAX_CHUNKS + 1))
def test_first_eighth_spans_the_shot(chunk_count: int) -> None:
    for total in range(1, 301):
        frames = list(range(total))
        chunks, used, raised = chunk(frames, math.ceil(total / chunk_count))
        assert not raised and all(len(c) <= used for c in chunks)
        assert sorted(f for c in chunks for f in c) == frames  # every frame exactly once
        for done in simulate(chunks, workers=min(len(chunks), MAX_CHUNKS)):
            if len(done) * 8 >= total:
                spacing = total / len(done)
                gap = longest_gap(done, total)
                assert gap <= 2 * spacing + SLACK, (total, chunk_count, len(done), gap)


def test_forty_eight_frames_on_two_workers_start_across_the_shot() -> None:
    chunks, _, _ = chunk(list(range(1, 49)), 24)
    assert [c[0] for c in chunks] == [1, 33]
    assert sorted(c[1] for c in chunks) == [9, 17]
    assert longest_gap({f - 1 for c in chunks for f in c[:3]}, 48) <= 2 * 48 / 6


def test_coarse_to_fine_is_a_permutation_and_starts_coarse() -> None:
    for count in range(0, 600):
        assert sorted(coarse_to_fine(count)) == list(range(count))
    assert coarse_to_fine(16)[:8] == [0, 8, 4, 12, 2, 10, 6, 14]  # every 8th, then every 4th, then every 2nd


def test_frame_numbers_and_steps_are_kept() -> None:
    frames = list(range(-10, 31, 5))
    chunks, used, raised = chunk(frames, 3)
    assert (len(chunks), used, raised) == (3, 3, False)
    assert sorted(f for c in chunks for f in c) == frames
    assert chunks[0][0] == -10


def test_array_cap_still_raises_frames_per_job() -> None:
    chunks, used, raised = chunk(list(range(25_000)), 1)
    assert (used, raised, len(chunks)) == (3, True, 8334) and len(chunks) <= MAX_ARRAY_SIZE
    assert sum(len(c) for c in chunks) == 25_000 and max(len(c) for c in chunks) <= 3


def test_watcher_reports_the_longest_gap_without_an_extra_call() -> None:
    following = pytest.importorskip("render_on_aws.core.following")
    from render_on_aws.core.progress import describe

    plan = {"frame_start": 1, "frame_end": 48, "frame_step": 1}
    keys = [layout.frame_key("j", n, "png") for n in (1, 33, 17, 9)]

    class Body:
        def read(self) -> bytes:
            return json.dumps(plan).encode()

    class Client:
        def describe_execution(self, executionArn: str) -> dict:
            return {"status": "RUNNING"}

        def get_object(self, Bucket: str, Key: str) -> dict:
            return {"Body": Body()}

        def get_paginator(self, name: str) -> Client:
            return self

        def paginate(self, Bucket: str, Prefix: str) -> list[dict]:
            return [{"Contents": [{"Key": k} for k in keys if k.startswith(Prefix)]}]

    class Connection:
        def client(self, name: str) -> Client:
            return Client()

    class Job:
        bucket, job_id, execution_arn = "b", "j", "arn"

    watcher = following.JobWatcher(Connection(), Job())
    first = watcher.poll()
    assert (first.frames_done, first.frames_total, first.longest_gap) == (4, 48, 15)  # 34..48 missing
    calls = watcher.calls
    watcher.poll()
    assert watcher.calls - calls == 2  # DescribeExecution + one listing page; the plan is read once
    assert "rendering 4/48 frames, longest gap 15 frames, ETA" in describe(first, 10.0)
    assert following.longest_gap([1, 2, 3, 4], {2}) == 2 and following.longest_gap([], set()) == 0
