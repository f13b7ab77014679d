"""Sequencer media (issue 16.5): sound, movie and image strips are packed with the right path, never falsely missing.

The report: a scene with a sound strip next to its .blend was refused with ``MissingDependencies`` for a phantom
``/tone.wav``. blender-asset-tracer 1.23 joins a strip's folder (``StripData.dir``) and file name
(``StripElem.name``) with a slash-stripping join, so a folder of ``//`` (the .blend's own) became the disk's root.
Movie and image strips beside the .blend were lost the same way (missing, and not packed). The scenes here are made
by real bpy 5.0.1: media beside the .blend (the reported case), in a subfolder, outside the project (an absolute
path, so the .blend copy's folder field is rewritten), a two-image strip, a packed sound, and one strip whose file is
really missing. The job tree is then laid out as the worker lays it out and opened in bpy, which must find every
strip's file inside the tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from render_on_aws.core import packing, preparing

SCENE_SCRIPT = r"""
import math, struct, subprocess, sys, wave
from pathlib import Path
import bpy, imageio_ffmpeg

project, elsewhere = Path(sys.argv[1]), Path(sys.argv[2])
for folder in (project / "frames", project / "media", elsewhere):
    folder.mkdir(parents=True, exist_ok=True)

def tone(path):
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1); out.setsampwidth(2); out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(4000)))

def movie(path):
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "color=c=red:s=32x18:d=0.5:r=24", "-pix_fmt", "yuv420p", str(path)], check=True)

def png(path):
    image = bpy.data.images.new(path.stem, 4, 4)
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)

tone(project / "tone.wav"); tone(project / "media" / "packed.wav")
movie(project / "clip.mp4"); movie(elsewhere / "far.mp4")
png(project / "still.png"); png(project / "frames" / "a.png"); png(project / "frames" / "b.png")

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.image_settings.media_type = "VIDEO"
scene.render.image_settings.file_format = "FFMPEG"
scene.render.ffmpeg.format = "QUICKTIME"
scene.render.ffmpeg.codec = "H264"
scene.render.ffmpeg.audio_codec = "AAC"
bpy.ops.wm.save_as_mainfile(filepath=str(project / "sequencer.blend"))
strips = scene.sequence_editor_create().strips
strips.new_sound("tone", "//tone.wav", channel=1, frame_start=1)
strips.new_movie("clip", "//clip.mp4", channel=2, frame_start=1)
strips.new_image("still", "//still.png", channel=3, frame_start=1)
pair = strips.new_image("pair", "//frames/a.png", channel=4, frame_start=1)
pair.elements.append("b.png")
strips.new_movie("far", str(elsewhere / "far.mp4"), channel=5, frame_start=1)
packed = strips.new_sound("packed", "//media/packed.wav", channel=6, frame_start=1)
packed.sound.pack()
bpy.ops.wm.save_as_mainfile(filepath=str(project / "sequencer.blend"))
strips.new_image("gone", "//gone.png", channel=7, frame_start=1)
bpy.ops.wm.save_as_mainfile(filepath=str(project / "with_missing.blend"))
"""

STRIP_FILES = r"""
import json, os, sys
import bpy
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
found = {}
for strip in bpy.context.scene.sequence_editor.strips_all:
    if strip.type == "SOUND":
        paths = [] if strip.sound.packed_file else [strip.sound.filepath]
    elif strip.type == "MOVIE":
        paths = [strip.filepath]
    else:
        paths = [os.path.join(strip.directory, element.filename) for element in strip.elements]
    found[strip.name] = [os.path.realpath(bpy.path.abspath(path)) for path in paths]
print("STRIPS " + json.dumps(found))
"""

IN_PROJECT = {"sequencer.blend", "tone.wav", "clip.mp4", "still.png", "frames/a.png", "frames/b.png"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("artist")
    script = base / "make_sequencer.py"
    script.write_text(SCENE_SCRIPT)
    subprocess.run(
        [sys.executable, str(script), str(base / "project"), str(base / "elsewhere")],
        check=True,
        capture_output=True,
        cwd=base,
    )
    for backup in (base / "project").glob("*.blend1"):
        backup.unlink()
    return base / "project"


@pytest.fixture(autouse=True)
def _own_hash_cache(own_hash_cache: Path) -> Path:
    return own_hash_cache


def strip_files(blend: Path) -> dict[str, list[str]]:
    """What bpy resolves each strip's file(s) to, as real paths."""
    result = subprocess.run([sys.executable, "-c", STRIP_FILES, str(blend)], check=True, capture_output=True, text=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("STRIPS "))
    found: dict[str, list[str]] = json.loads(line.removeprefix("STRIPS "))
    return found


def test_every_strip_file_is_packed_and_none_is_missing(project: Path, tmp_path: Path) -> None:
    prepared = preparing.prepare(preparing.SubmitRequest(project / "sequencer.blend"))
    try:
        assert prepared.missing == []
        files = set(prepared.files)
        outside = files - IN_PROJECT
        assert files >= IN_PROJECT, files
        assert len(outside) == 1 and next(iter(outside)).endswith("/elsewhere/far.mp4"), outside
        assert "media/packed.wav" not in files  # the packed sound travels inside the .blend
        # The job tree as the worker lays it out (its own folder: the artist's files are out of reach there).
        tree = tmp_path / "job"
        for rel, stored in prepared.files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stored.path, tree / rel)
    finally:
        prepared.cleanup()
    shutil.move(project.parent, tmp_path / "artist-gone")  # nothing may resolve to the artist's disk
    try:
        resolved = strip_files(tree / prepared.main)
    finally:
        shutil.move(tmp_path / "artist-gone", project.parent)
    assert set(resolved) == {"tone", "clip", "still", "pair", "far", "packed"}
    assert resolved["packed"] == []
    assert len(resolved["pair"]) == 2
    for name, paths in resolved.items():
        for path in paths:
            assert Path(path).is_relative_to(tree.resolve()) and os.path.isfile(path), (name, path)


def test_a_really_missing_strip_file_is_named_with_its_strip(project: Path) -> None:
    prepared = preparing.prepare(preparing.SubmitRequest(project / "with_missing.blend"))
    try:
        assert [(item.path, item.used_by) for item in prepared.missing] == [
            (str(project / "gone.png"), "sequencer strip 'gone' in with_missing.blend")
        ]
        assert set(prepared.files) >= (IN_PROJECT - {"sequencer.blend"}) | {"with_missing.blend"}
    finally:
        prepared.cleanup()


def test_the_cli_refuses_only_the_really_missing_file(project: Path, own_hash_cache: Path) -> None:
    """Refused before any connection is made: the endpoint here answers nothing."""
    env = {**os.environ, "RENDER_ON_AWS_CACHE_DIR": str(own_hash_cache)}
    command = [sys.executable, "-m", "render_on_aws.core.cli", "--endpoint", "http://127.0.0.1:9", "submit"]
    refused = subprocess.run(
        [*command, str(project / "with_missing.blend")], capture_output=True, text=True, env=env, timeout=300
    )
    assert refused.returncode != 0
    missing = [line for line in refused.stderr.splitlines() if line.startswith("missing: ")]
    assert missing == [f"missing: {project / 'gone.png'} (used by sequencer strip 'gone' in with_missing.blend)"]
    assert refused.stderr.strip().splitlines()[-1].startswith("MissingDependencies: 1 file(s)")


@pytest.mark.parametrize(
    ("folder", "name", "path"),
    [
        (b"//", b"tone.wav", b"//tone.wav"),  # the reported case: BAT made it /tone.wav
        (b"//media/", b"clip.mp4", b"//media/clip.mp4"),
        (b"//media", b"still.png", b"//media/still.png"),
        (b"/abs/dir/", b"a.png", b"/abs/dir/a.png"),
        (b"C:\\clips\\", b"a.mp4", b"C:/clips/a.mp4"),  # one separator; BlendPath writes slashes
        (b"", b"bare.png", b"bare.png"),
    ],
)
def test_a_strip_path_is_joined_as_blender_joins_it(folder: bytes, name: bytes, path: bytes) -> None:
    assert bytes(packing.sequencer_path(folder, name)) == path
