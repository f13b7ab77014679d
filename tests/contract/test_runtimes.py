"""The runtime table and the rule that picks a job's Blender (render_contract.runtimes): every branch."""

from __future__ import annotations

import pytest
from render_contract import execution_input, runtimes
from render_contract.errors import BlenderTooNew, InvalidInput, UnknownRuntime
from render_contract.runtimes import RUNTIMES, choose

BUCKET = "bucket"
SOURCE = {"inputUri": "s3://bucket/a.blend"}


def test_the_table_pins_one_patch_version_per_series() -> None:
    assert {"4.2", "4.5", "5.0"} <= RUNTIMES.keys()
    for series, version in RUNTIMES.items():
        assert runtimes.series_of(runtimes.parse_version(version)) == series
        assert len(runtimes.parse_version(version)) == 3, "pinned to a patch version"


@pytest.mark.parametrize("series", sorted(RUNTIMES))
def test_a_file_renders_on_the_series_that_saved_it(series: str) -> None:
    choice = choose(series)
    assert (choice.series, choice.bpy_version, choice.notices) == (series, RUNTIMES[series], ())


@pytest.mark.parametrize(
    ("saved_by", "expected"), [("4.3", "4.5"), ("4.4", "4.5"), ("4.1", "4.2"), ("3.6", "4.2"), ("2.79", "4.2")]
)
def test_a_missing_series_renders_on_the_nearest_newer_with_a_notice(saved_by: str, expected: str) -> None:
    choice = choose(saved_by)
    assert choice.series == expected
    assert len(choice.notices) == 1 and choice.notices[0].startswith("OtherBlenderRuntime: ")
    assert f"no Blender {saved_by} runtime" in choice.notices[0] and RUNTIMES[expected] in choice.notices[0]


@pytest.mark.parametrize("saved_by", ["5.1", "6.0", "5.10"])
def test_a_file_newer_than_every_runtime_is_refused_by_name(saved_by: str) -> None:
    with pytest.raises(BlenderTooNew, match=f"Blender {saved_by}, newer than every runtime"):
        choose(saved_by)


def test_an_override_wins_with_a_notice_when_it_is_not_the_files_series() -> None:
    assert choose("4.2", override="4.2") == runtimes.Choice("4.2", RUNTIMES["4.2"])
    choice = choose("4.2", override="5.0")
    assert choice.series == "5.0" and choice.notices[0].startswith("OtherBlenderRuntime: rendering with Blender 5.0")
    assert choose("5.1", override="5.0").series == "5.0", "an override lets a too-new file render anyway"
    assert choose("4.2", override=RUNTIMES["4.5"]).series == "4.5", "the exact pinned version names its series"


@pytest.mark.parametrize("override", ["4.3", "9.9", "4.2.1", "5.0.0"])
def test_an_override_naming_no_runtime_is_refused_by_name(override: str) -> None:
    with pytest.raises(UnknownRuntime, match="the farm has no Blender"):
        choose("4.2", override=override)


def test_the_artists_blender_is_checked_against_the_file() -> None:
    assert choose("4.2", artist_version=(4, 2, 3)).notices == ()
    mismatch = choose("4.2", artist_version="4.5.1")
    assert mismatch.series == "4.2", "the file decides"
    assert mismatch.notices[0].startswith("BlenderVersionMismatch: your Blender is 4.5.1")
    assert choose(None, artist_version=[4, 5, 2]).series == "4.5", "without a header version the artist's counts"
    unknown = choose(None)
    assert unknown.series == max(RUNTIMES, key=runtimes.parse_version) and unknown.notices


@pytest.mark.parametrize("bad", ["", "four", "4", "4.2.3.1", [4], [4, "2"], [True, 2], 4.2, {"v": 1}, "-4.2"])
def test_bad_versions_are_invalid_input(bad: object) -> None:
    with pytest.raises(InvalidInput):
        runtimes.parse_version(bad)


def test_execution_input_carries_both_fields_and_stays_optional() -> None:
    plain = execution_input.parse(SOURCE, BUCKET)
    assert (plain.blender_version, plain.blender_runtime) == (None, None)
    assert "blenderVersion" not in plain.to_dict() and "blenderRuntime" not in plain.to_dict()
    parsed = execution_input.parse({**SOURCE, "blenderVersion": [4, 2, 3], "blenderRuntime": "4.5"}, BUCKET)
    assert (parsed.blender_version, parsed.blender_runtime) == ("4.2.3", "4.5")
    again = execution_input.parse(parsed.to_dict(), BUCKET)
    assert again == parsed
    assert not parsed.unknown_fields


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("blenderVersion", "latest", InvalidInput),
        ("blenderVersion", 4, InvalidInput),
        ("blenderRuntime", 4.2, InvalidInput),
        ("blenderRuntime", "3.6", UnknownRuntime),
        ("blenderRuntime", "nightly", InvalidInput),
    ],
)
def test_bad_runtime_fields_are_refused_by_name(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        execution_input.parse({**SOURCE, field: value}, BUCKET)
