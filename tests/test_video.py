"""The video (issue 16.4): a movie scene's own container, codec, quality and sound; a stills job's preview made from
display-referred images.

Real parts only: scenes written by bpy 5.0.1 in their own process, the real worker as a process against S3 over
HTTP (moto server), real FFmpeg, videos probed with PyAV, and the same file rendered locally "F12-style" by
Blender's own movie writer to compare streams and codecs with. Scenes are tiny (64x36 Workbench, 6 frames).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import subprocess
import sys
import wave
from fractions import Fraction
from pathlib import Path

import av
import boto3
import numpy as np
import pytest
from render_contract import exitcodes, layout
from render_contract.errors import EncoderMissing
from render_contract.plan import Plan
from render_worker import movie
from render_worker.stitch import ffmpeg_binary

from localcloud.process import LocalCloudProcess
from tests.conftest import ROOT, make_scene, run_cli
from tests.test_frame_counter import Run, app, env, read_plan, run  # noqa: F401 (fixtures)
from tests.test_worker import _put_manifest, error_record, make_plan, run_worker, upload_blend

FFMPEG = ffmpeg_binary()

SETUP = r"""
import json, sys
import bpy

blend, options = sys.argv[1], json.loads(sys.argv[2])
bpy.ops.wm.open_mainfile(filepath=blend, load_ui=False)
scene = bpy.context.scene
image = scene.render.image_settings
if options.get("movie"):
    if hasattr(image, "media_type"):
        image.media_type = "VIDEO"
    image.file_format = "FFMPEG"
    for name, value in options["movie"].items():
        setattr(scene.render.ffmpeg, name, value)
for name, value in options.get("image", {}).items():
    setattr(image, name, value)
for name, value in options.get("view", {}).items():
    setattr(scene.view_settings, name, value)
scene.render.filepath = options.get("filepath", "//render/shot_")
if options.get("sound_scene"):  # the sound lives in another scene, shown by a scene strip
    holder = bpy.data.scenes.new("Sounds")
    holder.frame_end = 6
    strips = holder.sequence_editor_create().strips
    strips.new_sound("tone", options["sound_scene"], 1, 1).sound.pack()
    main = scene.sequence_editor_create().strips
    main.new_scene("shot", holder, 3, 1)
if options.get("sound"):
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    strip = strips.new_sound("tone", options["sound"], 2, 1)
    if options.get("pack"):
        strip.sound.pack()
if options.get("exposure") is not None:
    scene.view_settings.exposure = options["exposure"]
bpy.ops.wm.save_as_mainfile(filepath=blend, relative_remap=True)
"""

CONTAINERS = r"""
import sys
import bpy

folder = sys.argv[1]
bpy.ops.wm.open_mainfile(filepath=sys.argv[2], load_ui=False)
scene = bpy.context.scene
if hasattr(scene.render.image_settings, "media_type"):
    scene.render.image_settings.media_type = "VIDEO"
scene.render.image_settings.file_format = "FFMPEG"
for container, path in [
    ("MPEG4", "//render/shot_"), ("QUICKTIME", "//render/shot_###"), ("MKV", "/tmp/out/final.mkv"),
    ("WEBM", "//render/"), ("AVI", "//a"), ("DV", "//b"), ("FLASH", "//c"), ("MPEG1", "//d"), ("MPEG2", "//e"),
    ("OGG", "//f"),
]:
    scene.render.ffmpeg.format = container
    scene.render.filepath = path
    audio = {"MPEG4": ("AAC", 128, "MONO", 44100), "QUICKTIME": ("PCM", 192, "STEREO", 48000)}
    codec, bitrate, channels, rate = audio.get(container, ("NONE", 192, "STEREO", 48000))
    scene.render.ffmpeg.audio_codec = codec
    scene.render.ffmpeg.audio_bitrate = bitrate
    scene.render.ffmpeg.audio_channels = channels
    scene.render.ffmpeg.audio_mixrate = rate
    bpy.ops.wm.save_as_mainfile(filepath=f"{folder}/{container}.blend", copy=True)
"""

F12 = r"""
import sys
import bpy

bpy.ops.wm.open_mainfile(filepath=sys.argv[1], load_ui=False)
scene = bpy.context.scene
scene.render.filepath = sys.argv[2]
bpy.ops.render.render(animation=True)
print("F12", scene.render.frame_path(frame=scene.frame_start))
"""

RENDER_REFERENCE = r"""
import sys
import bpy

bpy.ops.wm.open_mainfile(filepath=sys.argv[1], load_ui=False)
scene = bpy.context.scene
scene.frame_set(scene.frame_start)
bpy.ops.render.render()
image = scene.render.image_settings
image.file_format = "PNG"
image.color_mode = "RGB"
image.color_depth = "8"
bpy.data.images["Render Result"].save_render(filepath=sys.argv[2], scene=scene)
"""


def bpy_script(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def sine_wav(path: Path, seconds: float = 1.0, rate: int = 44100, channels: int = 1) -> Path:
    """A 440 Hz tone, written with the standard library."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = (int(12000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate)))
        out.writeframes(b"".join(struct.pack("<h", s) * channels for s in samples))
    return path


def movie_scene(tmp_path: Path, name: str, **options: object) -> Path:
    blend = make_scene(
        tmp_path / f"{name}.blend", "--frame-end", "6", "--resolution", "64", "36", "--engine", "workbench"
    )
    bpy_script(SETUP, str(blend), json.dumps(options))
    return blend


def movie_plan(bucket: str, job_id: str, input_uri: str, main_file: str, container: str, video_name: str) -> Plan:
    """The plan the frame counter writes for a movie scene: PNG frames, the video named by the output path."""
    plan = make_plan(bucket, job_id, input_uri, main_file=main_file)
    ext = {"MPEG4": "mp4", "QUICKTIME": "mov", "MKV": "mkv", "WEBM": "webm"}[container]
    plan = dataclasses.replace(
        plan, file_format="FFMPEG", video_container=container, video_key=layout.video_key(job_id, video_name, ext)
    )
    boto3.client("s3").put_object(Bucket=bucket, Key=layout.plan_key(job_id), Body=plan.to_json())
    return plan


def streams(path: Path) -> dict:
    """What a player sees: the container, and each stream's codec and format."""
    with av.open(str(path)) as container:
        facts: dict = {"format": container.format.name, "video": None, "audio": None}
        if container.streams.video:
            video = container.streams.video[0]
            facts["video"] = {
                "codec": video.codec_context.name,
                "pix_fmt": video.codec_context.pix_fmt,
                "size": (video.codec_context.width, video.codec_context.height),
                "rate": video.average_rate,
                "frames": sum(1 for _ in container.decode(video)),
            }
        if container.streams.audio:
            audio = container.streams.audio[0]
            facts["audio"] = {
                "codec": audio.codec_context.name,
                "channels": audio.codec_context.channels,
                "rate": audio.codec_context.sample_rate,
            }
    return facts


def fetch_video(bucket: str, key: str, tmp_path: Path) -> Path:
    local = tmp_path / "farm" / key.rsplit("/", 1)[-1]
    local.parent.mkdir(exist_ok=True)
    boto3.client("s3").download_file(bucket, key, str(local))
    return local


def render_and_stitch(plan: Plan) -> str:
    result = run_worker("render", plan)
    assert result.returncode == exitcodes.EXIT_OK, result.stderr
    result = run_worker("stitch", plan)
    assert result.returncode == exitcodes.EXIT_OK, result.stderr
    return result.stderr


# --- the mapping of Blender's settings to FFmpeg (no bpy) -------------------------------------------------------


def _args(settings: movie.MovieSettings, encoders: frozenset[str] | None = None) -> list[str]:
    encoders = encoders or movie.available_encoders(FFMPEG)
    return movie.video_args(settings, movie.video_encoder(settings, encoders))


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize(
    ("crf", "x264", "x265"),
    [("PERC_LOSSLESS", "17", "20"), ("HIGH", "20", "24"), ("MEDIUM", "23", "28"), ("LOWEST", "32", "37")],
)
def test_crf_names_map_to_blenders_numbers(crf: str, x264: str, x265: str) -> None:
    assert _option(_args(movie.MovieSettings(codec="H264", crf=crf)), "-crf") == x264
    assert _option(_args(movie.MovieSettings(codec="H265", crf=crf)), "-crf") == x265
    assert _option(_args(movie.MovieSettings(codec="H265", crf=crf, color_depth=10)), "-crf") == str(int(x265) - 3)


def test_lossless_is_4_4_4_and_each_codecs_own_switch() -> None:
    h264 = _args(movie.MovieSettings(codec="H264", crf="LOSSLESS"))
    assert _option(h264, "-crf") == "0" and _option(h264, "-pix_fmt") == "yuv444p"
    assert "lossless=1" in (_option(_args(movie.MovieSettings(codec="H265", crf="LOSSLESS")), "-x265-params") or "")
    assert _option(_args(movie.MovieSettings(codec="WEBM", crf="LOSSLESS")), "-lossless") == "1"


def test_bitrate_mode_keyframes_b_frames_and_presets() -> None:
    args = _args(
        movie.MovieSettings(
            codec="H264", crf="NONE", video_bitrate=4000, maxrate=5000, buffersize=100, gop=7, max_b_frames=2
        )
    )
    assert "-crf" not in args
    assert (_option(args, "-b:v"), _option(args, "-maxrate"), _option(args, "-bufsize")) == ("4000k", "5000k", "102400")
    assert (_option(args, "-g"), _option(args, "-bf")) == ("7", "2")
    assert _option(_args(movie.MovieSettings(codec="H264")), "-bf") == "0"  # Blender writes no B-frames unless asked
    for preset, x264 in (("BEST", "slower"), ("GOOD", "medium"), ("REALTIME", "superfast")):
        assert _option(_args(movie.MovieSettings(codec="H264", preset=preset)), "-preset") == x264
    assert _option(_args(movie.MovieSettings(codec="WEBM", preset="REALTIME")), "-deadline") == "realtime"


def test_prores_profiles_and_alpha() -> None:
    hq = _args(movie.MovieSettings(container="QUICKTIME", codec="PRORES", prores_profile="422_HQ"))
    assert (_option(hq, "-profile:v"), _option(hq, "-pix_fmt")) == ("3", "yuv422p10le")
    assert "-g" not in hq and "-b:v" not in hq
    alpha = _args(movie.MovieSettings(codec="PRORES", prores_profile="4444", alpha=True))
    assert _option(alpha, "-pix_fmt") == "yuva444p10le"
    assert _option(_args(movie.MovieSettings(codec="PNG", alpha=True)), "-pix_fmt") == "rgba"


def test_an_encoder_the_ffmpeg_lacks_is_a_named_error() -> None:
    without_x265 = movie.available_encoders(FFMPEG) - {"libx265"}
    with pytest.raises(EncoderMissing, match=r"H265 needs one of the FFmpeg encoders libx265"):
        _args(movie.MovieSettings(codec="H265"), without_x265)
    with pytest.raises(EncoderMissing, match=r"no video codec \(NONE\)"):
        _args(movie.MovieSettings(codec="NONE"))
    with pytest.raises(EncoderMissing, match=r"audio codec OPUS"):
        movie.audio_encoder(movie.MovieSettings(audio_codec="OPUS"), frozenset({"aac"}))


def test_av1_encoder_follows_the_preset_like_blender() -> None:
    every = frozenset({"librav1e", "libaom-av1", "libsvtav1"})
    picks = {p: movie.video_encoder(movie.MovieSettings(codec="AV1", preset=p), every) for p in movie.AV1_ENCODERS}
    assert picks == {"BEST": "librav1e", "GOOD": "libaom-av1", "REALTIME": "libsvtav1"}
    assert movie.video_encoder(movie.MovieSettings(codec="AV1", preset="BEST"), frozenset({"libsvtav1"})) == "libsvtav1"


FRAME_CASES = [("AV1", "MKV", preset, crf) for preset in ("BEST", "GOOD", "REALTIME") for crf in ("MEDIUM", "NONE")]
FRAME_CASES += [
    ("FFV1", "MKV", "GOOD", "NONE"),
    ("HUFFYUV", "AVI", "GOOD", "NONE"),
    ("PNG", "QUICKTIME", "GOOD", "NONE"),
    ("QTRLE", "QUICKTIME", "GOOD", "NONE"),
    ("MPEG1", "MPEG1", "GOOD", "NONE"),
    ("MPEG2", "MPEG2", "GOOD", "NONE"),
    ("MPEG4", "AVI", "GOOD", "NONE"),
    ("THEORA", "OGG", "GOOD", "NONE"),
    ("FLASH", "FLASH", "GOOD", "NONE"),
    ("H264", "MPEG4", "GOOD", "LOSSLESS"),
    ("H264", "MKV", "GOOD", "NONE"),
]


@pytest.fixture(scope="module")
def test_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 128x72 PNG frames numbered from 0, as the stitch lays them out (FFmpeg's test pattern)."""
    folder = tmp_path_factory.mktemp("frames")
    pattern = "testsrc=s=128x72:r=24:d=0.125"
    subprocess.run(
        [FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", pattern, "-start_number", "0", str(folder / "%06d.png")],
        check=True,
    )
    return folder


@pytest.mark.parametrize(("codec", "container", "preset", "crf"), FRAME_CASES)
def test_every_codec_blender_offers_writes_a_playable_video(
    test_frames: Path, tmp_path: Path, codec: str, container: str, preset: str, crf: str
) -> None:
    """The commands for the codecs the worker tests above do not run through Blender (FFmpeg and PyAV only)."""
    settings = movie.MovieSettings(container=container, codec=codec, preset=preset, crf=crf)
    out = tmp_path / f"video.{movie.MUXERS[container]}"
    subprocess.run(movie.command(FFMPEG, test_frames / "%06d.png", 24, 1, settings, out), check=True)
    facts = streams(out)
    assert facts["video"]["frames"] == 3 and facts["video"]["size"] == (128, 72)


def test_sizes_a_codec_refuses_are_named_before_ffmpeg_runs() -> None:
    with pytest.raises(Exception, match=r"DV video must be 720x576 \(PAL, 25 fps\), 720x480"):
        movie.check_size(movie.MovieSettings(codec="DV"), 1920, 1080)
    movie.check_size(movie.MovieSettings(codec="DV"), 720, 576)
    with pytest.raises(Exception, match=r"DNxHR needs at least 256x120"):
        movie.check_size(movie.MovieSettings(codec="DNXHD"), 128, 72)


@pytest.mark.parametrize(
    ("path", "stem"),
    [
        ("//render/shot_", "shot"),
        ("//render/shot_###", "shot"),
        ("/tmp/out/final.mov", "final"),
        ("//render/", ""),
        ("C:\\renders\\sq010.mkv", "sq010"),
        ("//cut.v2", "cut.v2"),
    ],
)
def test_movie_stem_of_an_output_path(path: str, stem: str) -> None:
    assert layout.movie_stem(path) == stem


def test_video_key_carries_the_containers_extension() -> None:
    assert layout.video_key("job-1", "shot", "mov") == "jobs/job-1/shot.mov"
    assert layout.video_key("job-1", "Tiny shot") == "jobs/job-1/Tiny_shot.mp4"
    with pytest.raises(Exception, match="invalid video extension"):
        layout.video_key("job-1", "shot", "mp4/../x")


# --- the worker: a movie scene's own movie, from real renders on S3 ----------------------------------------------


def f12_movie(blend: Path, tmp_path: Path) -> Path:
    """The same file rendered as the artist's Blender would (Render > Render Animation), with its own writer."""
    out = bpy_script(F12, str(blend), str(tmp_path / "f12" / "shot_"))
    return Path(out.split("F12 ", 1)[1].splitlines()[0].strip())


def test_mp4_h264_with_the_sequencers_sound_matches_blenders_own_movie(bucket: str, tmp_path: Path) -> None:
    blend = movie_scene(
        tmp_path,
        "mp4",
        movie={
            "format": "MPEG4",
            "codec": "H264",
            "constant_rate_factor": "HIGH",
            "ffmpeg_preset": "REALTIME",
            "gopsize": 3,
            "audio_codec": "AAC",
            "audio_channels": "STEREO",
            "audio_mixrate": 48000,
            "audio_bitrate": 128,
        },
        sound=str(sine_wav(tmp_path / "tone.wav")),
        pack=True,
    )
    plan = movie_plan(bucket, "job-mp4", upload_blend(bucket, blend, "uploads/mp4.blend"), "mp4.blend", "MPEG4", "shot")
    log = render_and_stitch(plan)
    assert "mixed down 1 sound sources" in log
    farm = streams(fetch_video(bucket, "jobs/job-mp4/shot.mp4", tmp_path))
    assert "mp4" in farm["format"]
    assert farm["video"] == {"codec": "h264", "pix_fmt": "yuv420p", "size": (64, 36), "rate": Fraction(24), "frames": 6}
    assert farm["audio"] == {"codec": "aac", "channels": 2, "rate": 48000}

    local = streams(f12_movie(blend, tmp_path))
    assert local == farm


MOVIES = {
    "mkv-h265-flac": (
        {"format": "MKV", "codec": "H265", "constant_rate_factor": "MEDIUM", "ffmpeg_preset": "REALTIME"}
        | {"audio_codec": "FLAC", "audio_channels": "MONO", "audio_mixrate": 44100},
        {"video": ("hevc", "yuv420p"), "audio": ("flac", 1, 44100), "format": "matroska"},
    ),
    "webm-vp9-opus": (
        {"format": "WEBM", "codec": "WEBM", "constant_rate_factor": "LOW", "ffmpeg_preset": "REALTIME"}
        | {"audio_codec": "OPUS", "audio_channels": "STEREO", "audio_mixrate": 48000, "audio_bitrate": 96},
        {"video": ("vp9", "yuv420p"), "audio": ("opus", 2, 48000), "format": "matroska"},
    ),
    "mov-prores-pcm": (
        {"format": "QUICKTIME", "codec": "PRORES", "ffmpeg_prores_profile": "422_HQ"}
        | {"audio_codec": "PCM", "audio_channels": "STEREO", "audio_mixrate": 48000},
        {"video": ("prores", "yuv422p10le"), "audio": ("pcm_s16le", 2, 48000), "format": "mov"},
    ),
}


@pytest.mark.parametrize("case", sorted(MOVIES))
def test_container_codec_and_audio_of_the_scene_with_the_sound_file_from_the_manifest(
    bucket: str, tmp_path: Path, case: str
) -> None:
    """The sound is a file next to the .blend (``//tone.wav``) in the job's manifest, as the add-on uploads it."""
    settings, expected = MOVIES[case]
    sine_wav(tmp_path / "tone.wav")
    blend = movie_scene(tmp_path, "scene", movie=settings, sound="//tone.wav")
    job_id = f"job-{case}"
    files = {"scene.blend": blend.read_bytes(), "tone.wav": (tmp_path / "tone.wav").read_bytes()}
    files["textures/big.bin"] = b"\0" * 1000  # not a sound: the stitch does not fetch it
    uri = _put_manifest(bucket, job_id, "scene.blend", files)
    plan = movie_plan(bucket, job_id, uri, "scene.blend", settings["format"], "shot")
    log = render_and_stitch(plan)
    assert "fetched 2 files of manifest" in log.split("render-worker stitch", 1)[1]

    farm = streams(fetch_video(bucket, plan.video_key, tmp_path))
    assert expected["format"] in farm["format"]
    assert (farm["video"]["codec"], farm["video"]["pix_fmt"]) == expected["video"]
    assert (farm["video"]["frames"], farm["video"]["rate"], farm["video"]["size"]) == (6, Fraction(24), (64, 36))
    assert (farm["audio"]["codec"], farm["audio"]["channels"], farm["audio"]["rate"]) == expected["audio"]

    local = streams(f12_movie(blend, tmp_path))
    assert (local["video"]["codec"], local["audio"]["codec"]) == (farm["video"]["codec"], farm["audio"]["codec"])
    assert (local["audio"]["channels"], local["audio"]["rate"]) == (farm["audio"]["channels"], farm["audio"]["rate"])


def test_the_sound_of_a_scene_strip_is_mixed_in(bucket: str, tmp_path: Path) -> None:
    blend = movie_scene(
        tmp_path,
        "nested",
        movie={"format": "MKV", "codec": "H264", "audio_codec": "MP3", "audio_mixrate": 44100},
        sound_scene=str(sine_wav(tmp_path / "tone.wav")),
    )
    plan = movie_plan(bucket, "job-nested", upload_blend(bucket, blend), "tiny.blend", "MKV", "shot")
    assert "mixed down 1 sound sources" in render_and_stitch(plan)
    farm = streams(fetch_video(bucket, "jobs/job-nested/shot.mkv", tmp_path))
    assert farm["audio"]["codec"].startswith("mp3") and farm["audio"]["rate"] == 44100  # PyAV: "mp3float"


def test_a_movie_without_a_video_codec_fails_by_name_and_keeps_the_frames(bucket: str, tmp_path: Path) -> None:
    blend = movie_scene(tmp_path, "novideo", movie={"format": "MKV", "codec": "NONE", "audio_codec": "FLAC"})
    plan = movie_plan(bucket, "job-novideo", upload_blend(bucket, blend), "tiny.blend", "MKV", "shot")
    assert run_worker("render", plan).returncode == exitcodes.EXIT_OK
    result = run_worker("stitch", plan)
    assert result.returncode == exitcodes.EXIT_FAILED, result.stderr
    record = error_record(bucket, layout.errors_prefix(plan.job_id) + "stitch-attempt-1.json")
    assert record["error"] == "EncoderMissing" and "no video codec (NONE)" in record["message"]
    s3 = boto3.client("s3")
    assert len(s3.list_objects_v2(Bucket=bucket, Prefix=layout.frames_prefix(plan.job_id))["Contents"]) == 6
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=plan.video_key)


def test_an_audio_codec_without_any_sound_writes_no_audio_stream(bucket: str, tmp_path: Path) -> None:
    blend = movie_scene(tmp_path, "silent", movie={"format": "QUICKTIME", "codec": "H264", "audio_codec": "AAC"})
    plan = movie_plan(bucket, "job-silent", upload_blend(bucket, blend), "tiny.blend", "QUICKTIME", "shot")
    log = render_and_stitch(plan)
    assert "no sound strip or speaker: no audio stream" in log
    farm = streams(fetch_video(bucket, "jobs/job-silent/shot.mov", tmp_path))
    assert farm["audio"] is None and farm["video"]["codec"] == "h264" and "mov" in farm["format"]


# --- a stills job's preview: display-referred, as the Render window shows it -------------------------------------


def first_frame(video: Path, tmp_path: Path) -> np.ndarray:
    """The video's first frame as RGB 0..1, decoded by FFmpeg (which honours the stream's BT.709 tags)."""
    png = tmp_path / f"{video.stem}-first.png"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-frames:v", "1", str(png)], check=True
    )
    return read_png(png)


def read_png(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24").astype(np.float64) / 255.0


@pytest.mark.parametrize(
    "view", [{}, {"view_transform": "AgX", "exposure": 0.5, "gamma": 1.2}], ids=["default-view", "exposure-gamma"]
)
def test_an_exr_jobs_preview_looks_like_the_render_window(bucket: str, tmp_path: Path, view: dict) -> None:
    """The first video frame against Blender's display-referred render of frame 1 (the Render window's image, with
    the scene's view transform, exposure and gamma): close after, far before (FFmpeg fed the linear EXR)."""
    blend = make_scene(
        tmp_path / "exr.blend",
        *("--frame-end", "3", "--resolution", "64", "36", "--engine", "workbench", "--file-format", "OPEN_EXR"),
    )
    bpy_script(SETUP, str(blend), json.dumps({"view": view}))
    plan = make_plan(bucket, "job-exr", upload_blend(bucket, blend, "uploads/exr.blend"), frames=(1, 3, 1))
    plan = dataclasses.replace(plan, file_format="OPEN_EXR", frame_extension="exr", main_file="exr.blend")
    boto3.client("s3").put_object(Bucket=bucket, Key=layout.plan_key(plan.job_id), Body=plan.to_json())
    log = render_and_stitch(plan)
    assert "converting 3 exr frames to display-referred PNG: view AgX" in log
    assert f"exposure {view.get('exposure', 0):g}, gamma {view.get('gamma', 1):g}" in log

    reference = tmp_path / "render-window.png"
    bpy_script(RENDER_REFERENCE, str(blend), str(reference))
    window = read_png(reference)
    after = float(np.abs(first_frame(fetch_video(bucket, plan.video_key, tmp_path), tmp_path) - window).mean())

    # Before: FFmpeg read the scene-linear EXR itself, as the stitch did.
    raw = tmp_path / "raw"
    raw.mkdir()
    boto3.client("s3").download_file(bucket, layout.frame_key(plan.job_id, 1, "exr"), str(raw / "000000.exr"))
    before_video = tmp_path / "before.mp4"
    subprocess.run(movie.command(FFMPEG, raw / "%06d.exr", 24, 1, movie.PREVIEW, before_video), check=True)
    before = float(np.abs(first_frame(before_video, tmp_path) - window).mean())

    print(f"EXR preview vs Render window, mean |difference| (0..1): before {before:.4f}, after {after:.4f}")
    assert after < 0.02, after
    assert before > 0.05, before


def test_a_png_jobs_preview_differs_from_the_render_window_by_compression_alone(bucket: str, tmp_path: Path) -> None:
    """PNG frames are display-referred already: the stitch does not open the .blend, and only H.264 differs."""
    blend = make_scene(tmp_path / "png.blend", "--frame-end", "3", "--resolution", "64", "36", "--engine", "workbench")
    plan = make_plan(bucket, "job-png", upload_blend(bucket, blend, "uploads/png.blend"), frames=(1, 3, 1))
    plan = dataclasses.replace(plan, main_file="png.blend")
    boto3.client("s3").put_object(Bucket=bucket, Key=layout.plan_key(plan.job_id), Body=plan.to_json())
    log = render_and_stitch(plan)
    assert "display-referred" not in log and "fetched" not in log.split("render-worker stitch", 1)[1]
    reference = tmp_path / "render-window.png"
    bpy_script(RENDER_REFERENCE, str(blend), str(reference))
    video = fetch_video(bucket, "jobs/job-png/Tiny_shot.mp4", tmp_path)
    difference = float(np.abs(first_frame(video, tmp_path) - read_png(reference)).mean())
    print(f"PNG preview vs Render window, mean |difference| (0..1): {difference:.4f}")
    assert difference < 0.02, difference


# --- the frame counter names the video ---------------------------------------------------------------------------


def test_the_frame_counter_names_a_movie_jobs_video_by_output_path_and_container(
    run: Run,  # noqa: F811 (the frame counter's fixture)
    tmp_path: Path,
) -> None:
    """Files written by bpy 5.0.1 with each container: the plan's video is ``<output name>.<extension>`` (the job
    name when the output path is a folder), and the summary's ``videoUri`` (what clients download) says so."""
    base = make_scene(tmp_path / "base.blend", "--frame-end", "6", "--resolution", "64", "36", "--engine", "workbench")
    bpy_script(CONTAINERS, str(tmp_path), str(base))
    expected = {
        "MPEG4": "shot.mp4",
        "QUICKTIME": "shot.mov",
        "MKV": "final.mkv",
        "WEBM": "Pottery.webm",
        "AVI": "a.avi",
        "DV": "b.dv",
        "FLASH": "c.flv",
        "MPEG1": "d.mpg",
        "MPEG2": "e.mpg",
        "OGG": "f.ogv",
    }
    for container, name in expected.items():
        summary = run(tmp_path / f"{container}.blend", job_id=f"name-{container.lower()}", jobName="Pottery")
        plan = read_plan(summary)
        assert (plan.file_format, plan.video_container, plan.frame_extension) == ("FFMPEG", container, "png")
        assert plan.video_key == f"jobs/name-{container.lower()}/{name}"
        assert summary["videoUri"].endswith(f"/{plan.video_key}")
        audio = {"MPEG4": "AAC 128 kb/s, mono, 44100 Hz", "QUICKTIME": "PCM stereo, 48000 Hz"}
        assert plan.video_audio == audio.get(container, "NONE"), "what will come back says the scene's sound"
    stills = read_plan(run(base, job_id="name-stills", jobName="Pottery"))
    assert (stills.video_container, stills.video_key, stills.video_audio) == ("", "jobs/name-stills/Pottery.mp4", "")


# --- the whole pipeline on the local cloud -----------------------------------------------------------------------

OPEN_VIDEO = r"""
import sys
from pathlib import Path

import bpy

sys.path.insert(0, sys.argv[2])
from addon.operators import open_video

scene = open_video(Path(sys.argv[1]), "shot")
print("STRIPS", sorted(strip.type for strip in scene.sequence_editor.strips))
"""


@pytest.mark.slow
def test_a_quicktime_scene_with_sound_comes_back_as_its_mov_with_audio(
    local_cloud: LocalCloudProcess, tmp_path: Path
) -> None:
    """submit --wait --download through the real command line: the file the artist gets is the scene's movie
    (``shot.mov``: H.264 and AAC, the sound packed in the .blend), and Open Video puts picture and sound in a scene."""
    blend = movie_scene(
        tmp_path,
        "quicktime",
        movie={"format": "QUICKTIME", "codec": "H264", "constant_rate_factor": "MEDIUM", "audio_codec": "AAC"},
        sound=str(sine_wav(tmp_path / "tone.wav")),
        pack=True,
    )
    result = run_cli(local_cloud, "submit", str(blend), "--wait", "--download", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    video_path = Path(result.stdout.split()[1])
    assert video_path == tmp_path / "out" / "shot.mov", video_path
    farm = streams(video_path)
    assert "mov" in farm["format"] and farm["video"]["codec"] == "h264" and farm["video"]["frames"] == 6
    assert (farm["audio"]["codec"], farm["audio"]["channels"], farm["audio"]["rate"]) == ("aac", 2, 48000)
    assert "STRIPS ['MOVIE', 'SOUND']" in bpy_script(OPEN_VIDEO, str(video_path), str(ROOT))


SAVE_DISPLAY = r"""
import sys
from pathlib import Path

import bpy
from render_worker import display

scene = bpy.context.scene
scene.render.engine = "BLENDER_WORKBENCH"
scene.render.resolution_x, scene.render.resolution_y = 64, 36
scene.render.image_settings.media_type = "MULTI_LAYER_IMAGE"
scene.render.image_settings.file_format = "OPEN_EXR_MULTILAYER"
scene.view_settings.exposure = 1.0
scene.render.filepath = sys.argv[1] + "/frame_"
bpy.ops.render.render(write_still=True)
display.save_display(bpy.data.images["Render Result"], scene, Path(sys.argv[1]) / "window.png")
settings = scene.render.image_settings
print("KEPT", settings.media_type, settings.file_format)
display.to_display(scene, next(Path(sys.argv[1]).glob("frame_*.exr")), Path(sys.argv[1]) / "converted.png")
"""


def test_save_display_serves_a_render_result_and_a_multilayer_exr_and_restores_the_output(tmp_path: Path) -> None:
    """For a flipbook writer: the Render Result saved display-referred, the artist's output settings kept, and a
    multilayer EXR frame converted to the same image."""
    out = bpy_script(SAVE_DISPLAY, str(tmp_path))
    assert "KEPT MULTI_LAYER_IMAGE OPEN_EXR_MULTILAYER" in out
    difference = float(np.abs(read_png(tmp_path / "window.png") - read_png(tmp_path / "converted.png")).mean())
    assert difference < 0.01, difference


KEEPS_SETTINGS = r"""
import bpy
from render_worker import display
scene = bpy.context.scene
settings = scene.render.image_settings
settings.file_format, settings.color_mode, settings.color_depth, settings.quality = "PNG", "RGBA", "16", 55
with display._output_as(scene, "JPEG", "8", 80):
    print("inside", settings.file_format, settings.color_mode, settings.color_depth)
print("after", settings.file_format, settings.color_mode, settings.color_depth, settings.quality)
"""


def test_a_display_referred_save_puts_the_scenes_own_image_settings_back() -> None:
    """The flipbook saves a JPEG preview after every frame: the scene's 16-bit RGBA PNG settings must survive it
    (a switch to JPEG clamps colour mode and depth, so they are read before anything changes)."""
    done = subprocess.run([sys.executable, "-c", KEEPS_SETTINGS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("inside", "after"))]
    assert lines == ["inside JPEG RGB 8", "after PNG RGBA 16 55"], done.stdout
