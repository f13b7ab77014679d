"""The contract of partial failure and previews: failed-frame records, the FramesFailed cause, the keys."""

from __future__ import annotations

from render_contract import errors, failures, layout
from render_contract.failures import FrameFailure

JOB = "ann-shot-20261205-000000-abcdef"


def test_frame_lists_are_short_and_exact() -> None:
    assert failures.frame_list([5, 3, 4, 9, 1, 3]) == "1, 3-5, 9"
    assert failures.frame_list([]) == ""
    assert failures.frame_list(range(0, 100, 2), limit=3) == "0, 2, 4, ... (50 frames)"


def test_the_cause_lists_every_failed_frame_and_groups_causes() -> None:
    found = [
        FrameFailure(7, "RenderFailed", "Error: Image too small"),
        FrameFailure(3, "RenderFailed", "Error: Image too small"),
        FrameFailure(12, "FrameTimedOut", "rendered longer than the per-frame time limit of 600 s"),
    ]
    assert failures.describe(found) == (
        "3 frame(s) failed: 3, 7, 12. RenderFailed on 3, 7: Error: Image too small; "
        "FrameTimedOut on 12: rendered longer than the per-frame time limit of 600 s"
    )
    assert failures.describe(found[:1], not_rendered=[7, 8, 9]) == (
        "1 frame(s) failed: 7. RenderFailed on 7: Error: Image too small. 2 other frame(s) were not rendered: 8-9."
    )
    many = [FrameFailure(n, "RenderFailed", f"cause {n} " + "x" * 200) for n in range(100)]
    assert len(failures.describe(many)) == failures.MAX_CAUSE_CHARS


def test_frames_failed_is_a_deterministic_named_error() -> None:
    assert {"FramesFailed", "FrameTimedOut"} <= set(errors.ERRORS)
    assert not errors.FramesFailed.retryable and errors.FramesFailed.exit_code == 65


def test_previews_and_failure_records_are_not_frames() -> None:
    assert layout.preview_key(JOB, 42) == f"jobs/{JOB}/previews/000042.jpg"
    assert layout.failed_key(JOB, 42) == f"jobs/{JOB}/failed/000042.json"
    for key in (layout.preview_key(JOB, 42), layout.failed_key(JOB, 42)):
        assert not key.startswith(layout.frames_prefix(JOB))  # frame listings, the stitch and downloads skip them
        assert layout.frame_from_key(key) == 42
    assert layout.PREVIEW_MAX_WIDTH == 480
