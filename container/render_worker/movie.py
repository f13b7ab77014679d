"""A scene's movie settings, and the FFmpeg command line that writes them: what Blender's own movie writer would
make of the same settings (``source/blender/imbuf/movie/intern/movie_write.cc``), from the frames the farm rendered.

This module holds no bpy: :class:`MovieSettings` is plain data (the stitch reads it from the scene with bpy, see
:func:`render_worker.display.movie_settings`), so the mapping is tested without Blender. What is mirrored from
Blender's writer:

* quality: a ``constant_rate_factor`` other than ``NONE`` is a CRF for the codecs that have one (H.264, H.265,
  VP9, AV1) with Blender's numbers (LOSSLESS 0, PERC_LOSSLESS 17, HIGH 20, MEDIUM 23, LOW 26, VERYLOW 29, LOWEST
  32; remapped for H.265 to 20..37, and -3 at 10/12 bits; for 10-bit H.264 onto -12..51). LOSSLESS is x264 CRF 0,
  x265 ``lossless=1``, VP9 ``lossless=1``, rav1e/SVT-AV1 ``qp 0``, in 4:4:4. ``NONE`` (or a codec without CRF)
  is the bitrate mode: ``video_bitrate``, ``minrate``/``maxrate`` (kbit/s) and ``buffersize`` (KiB);
* ``gopsize`` -> ``-g``; B-frames only when ``use_max_b_frames`` (Blender writes none otherwise);
* ``ffmpeg_preset`` BEST/GOOD/REALTIME -> x264/x265 ``slower``/``medium``/``superfast``, VP9 ``deadline``
  best/good/realtime, AV1: the encoder Blender picks for the preset (rav1e, libaom, SVT-AV1) and its speed;
* pixel formats: yuv420p (10/12-bit variants at ``color_depth`` 10/12), 4:4:4 for lossless, ProRes 4:2:2 10-bit
  (4:4:4 with alpha for 4444), RGB(A) for PNG, QuickTime RLE, FFV1 and HuffYUV; YUV streams carry BT.709 matrix,
  primaries, transfer and TV range as Blender tags them;
* audio: the codec, bitrate, channels and sample rate of ``render.ffmpeg``, with ``audio_volume``.

An encoder the worker's FFmpeg lacks is ``EncoderMissing`` (named, with the encoders tried), never a silent
substitute: the artist asked for that codec.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from render_contract.errors import EncoderMissing, StitchFailed

CRF = {"LOSSLESS": 0, "PERC_LOSSLESS": 17, "HIGH": 20, "MEDIUM": 23, "LOW": 26, "VERYLOW": 29, "LOWEST": 32}
"""Blender's ``constant_rate_factor`` enum: its DNA values are the H.264 8-bit CRFs (``eFFMpegCrf``)."""
H265_CRF = {"PERC_LOSSLESS": 20, "HIGH": 24, "MEDIUM": 28, "LOW": 31, "VERYLOW": 34, "LOWEST": 37}
"""Blender's ``remap_crf_to_h265_crf`` (8-bit; 3 lower at 10/12 bits)."""
CRF_CODECS = frozenset({"H264", "H265", "WEBM", "AV1"})
"""Codecs written with a CRF when ``constant_rate_factor`` is not NONE (``WEBM`` is Blender's name for VP9)."""
X264_PRESETS = {"BEST": "slower", "GOOD": "medium", "REALTIME": "superfast"}
VPX_DEADLINES = {"BEST": "best", "GOOD": "good", "REALTIME": "realtime"}
AV1_ENCODERS = {
    "BEST": ("librav1e", "libaom-av1", "libsvtav1"),
    "GOOD": ("libaom-av1", "libsvtav1", "librav1e"),
    "REALTIME": ("libsvtav1", "libaom-av1", "librav1e"),
}
"""Blender's ``get_av1_encoder``: the preset picks the encoder, then any AV1 encoder FFmpeg has."""
AV1_SPEED = {
    "librav1e": ("-speed", {"BEST": "4", "GOOD": "6", "REALTIME": "10"}),
    "libsvtav1": ("-preset", {"BEST": "3", "GOOD": "5", "REALTIME": "8"}),
    "libaom-av1": ("-cpu-used", {"BEST": "4", "GOOD": "6", "REALTIME": "8"}),
}
VIDEO_ENCODERS: dict[str, tuple[str, ...]] = {
    "H264": ("libx264",),
    "H265": ("libx265",),
    "WEBM": ("libvpx-vp9",),
    "PRORES": ("prores_ks", "prores_aw", "prores"),
    "DNXHD": ("dnxhd",),
    "DV": ("dvvideo",),
    "FFV1": ("ffv1",),
    "FLASH": ("flv",),
    "HUFFYUV": ("huffyuv",),
    "MPEG1": ("mpeg1video",),
    "MPEG2": ("mpeg2video",),
    "MPEG4": ("mpeg4",),
    "PNG": ("png",),
    "QTRLE": ("qtrle",),
    "THEORA": ("libtheora",),
}
"""``render.ffmpeg.codec`` -> FFmpeg encoders, preferred first (AV1: :data:`AV1_ENCODERS`)."""
AUDIO_ENCODERS: dict[str, tuple[str, ...]] = {
    "AAC": ("aac",),
    "AC3": ("ac3",),
    "FLAC": ("flac",),
    "MP2": ("mp2",),
    "MP3": ("libmp3lame",),
    "OPUS": ("libopus",),
    "PCM": ("pcm_s16le",),
    "VORBIS": ("libvorbis",),
}
"""``render.ffmpeg.audio_codec`` -> FFmpeg encoders (FFmpeg's own Opus and Vorbis encoders are experimental)."""
CHANNELS = {"MONO": 1, "STEREO": 2, "SURROUND4": 4, "SURROUND51": 6, "SURROUND71": 8}
MUXERS = {
    "MPEG4": "mp4",
    "QUICKTIME": "mov",
    "MKV": "matroska",
    "WEBM": "webm",
    "AVI": "avi",
    "DV": "dv",
    "FLASH": "flv",
    "MPEG1": "mpeg",
    "MPEG2": "vob",
    "OGG": "ogg",
}
"""``render.ffmpeg.format`` -> FFmpeg muxer (the file's extension is the contract's ``MOVIE_CONTAINERS``)."""
PRORES_PROFILES = {"422_PROXY": "0", "422_LT": "1", "422_STD": "2", "422_HQ": "3", "4444": "4", "4444_XQ": "5"}
INTRA_ONLY = frozenset({"PRORES", "DNXHD", "DV", "FFV1", "HUFFYUV", "PNG", "QTRLE"})
"""Codecs without a keyframe interval or bitrate to set (every frame is a keyframe; quality is the profile's)."""
B_FRAME_CODECS = frozenset({"H264", "H265", "MPEG1", "MPEG2", "MPEG4"})
RGB_FORMATS = frozenset({"rgb24", "rgba", "argb", "bgra", "bgr0"})


@dataclass(frozen=True)
class MovieSettings:
    """A scene's movie output, in Blender's own enum names (``scene.render.ffmpeg`` and ``image_settings``)."""

    container: str = "MPEG4"
    codec: str = "H264"
    crf: str = "MEDIUM"
    """``constant_rate_factor``: a :data:`CRF` name, or ``NONE`` for the bitrate mode."""
    preset: str = "GOOD"
    gop: int = 18
    max_b_frames: int | None = None
    """``max_b_frames`` when ``use_max_b_frames`` is on, else None (no B-frames, as Blender writes)."""
    video_bitrate: int = 6000
    minrate: int = 0
    maxrate: int = 9000
    buffersize: int = 1792
    prores_profile: str = "422_STD"
    color_depth: int = 8
    alpha: bool = False
    """``image_settings.color_mode == 'RGBA'``: kept by the codecs that carry alpha (PNG, QTRLE, FFV1, HuffYUV,
    VP9, ProRes 4444)."""
    audio_codec: str = "NONE"
    audio_bitrate: int = 192
    audio_channels: str = "STEREO"
    audio_mixrate: int = 48000
    audio_volume: float = 1.0

    @property
    def has_audio_codec(self) -> bool:
        return self.audio_codec not in ("", "NONE")

    @property
    def channel_count(self) -> int:
        return CHANNELS.get(self.audio_channels, 2)


PREVIEW = MovieSettings(container="MPEG4", codec="H264", crf="PERC_LOSSLESS", preset="GOOD", gop=12)
"""A stills job's preview: H.264 in MP4, visually lossless (CRF 17), a keyframe every 12 frames for scrubbing."""


@functools.lru_cache(maxsize=8)
def available_encoders(binary: str) -> frozenset[str]:
    """The encoders this FFmpeg build has (``ffmpeg -encoders``)."""
    try:
        listing = subprocess.run(
            [binary, "-hide_banner", "-nostdin", "-encoders"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise StitchFailed(f"cannot list the encoders of FFmpeg {binary}: {exc}") from exc
    names = set()
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS" and parts[1] != "=":
            names.add(parts[1])
    return frozenset(names)


def _pick(kind: str, wanted: str, candidates: tuple[str, ...], encoders: frozenset[str], hint: str) -> str:
    for name in candidates:
        if name in encoders:
            return name
    tried = ", ".join(candidates) or "none known"
    raise EncoderMissing(
        f"the scene's {kind} codec {wanted} needs one of the FFmpeg encoders {tried}, and the worker's FFmpeg has "
        f"none of them: {hint}"
    )


def video_encoder(settings: MovieSettings, encoders: frozenset[str]) -> str:
    candidates: tuple[str, ...] = VIDEO_ENCODERS.get(settings.codec, ())
    if settings.codec == "AV1":
        candidates = AV1_ENCODERS.get(settings.preset, AV1_ENCODERS["GOOD"])
    if settings.codec == "NONE":
        raise EncoderMissing("the scene's movie output has no video codec (NONE): choose one in Output > Encoding")
    return _pick("video", settings.codec, candidates, encoders, "choose H.264 (or another codec) in Output > Encoding")


def audio_encoder(settings: MovieSettings, encoders: frozenset[str]) -> str:
    hint = "choose AAC (or another audio codec) in Output > Encoding > Audio"
    return _pick("audio", settings.audio_codec, AUDIO_ENCODERS.get(settings.audio_codec, ()), encoders, hint)


def pixel_format(settings: MovieSettings) -> str | None:
    """The output pixel format Blender's writer would use (None: the encoder's own, e.g. DV's)."""
    codec, alpha = settings.codec, settings.alpha
    deep = {10: "10le", 12: "12le"}.get(settings.color_depth, "")
    if codec == "PRORES":
        if settings.prores_profile.startswith("4444"):
            return "yuva444p10le" if alpha else "yuv444p10le"
        return "yuv422p10le"
    if codec == "PNG":
        return "rgba" if alpha else "rgb24"
    if codec == "QTRLE":
        return "argb" if alpha else "rgb24"
    if codec in ("FFV1", "HUFFYUV"):
        return "bgra" if alpha or codec == "FFV1" else "rgb24"
    if codec == "DNXHD":
        return "yuv422p"
    if codec == "DV":
        return None
    if codec == "WEBM" and alpha:
        return "yuva420p"
    if codec in CRF_CODECS and settings.crf == "LOSSLESS":
        return f"yuv444p{deep}"
    if codec in CRF_CODECS and deep:
        return f"yuv420p{deep}"
    return "yuv420p"


def _quality(settings: MovieSettings, encoder: str) -> list[str]:
    """CRF or bitrate options, as Blender's ``set_quality_rate_options``."""
    codec = settings.codec
    if codec in INTRA_ONLY:
        return []
    if codec not in CRF_CODECS or settings.crf not in CRF:
        rate = ["-b:v", f"{settings.video_bitrate}k"]
        if codec == "AV1":  # SVT-AV1 refuses a maximum rate outside CRF mode; rav1e and libaom ignore them
            return rate
        if settings.maxrate > 0:
            rate += ["-maxrate", f"{settings.maxrate}k"]
        if settings.minrate > 0:
            rate += ["-minrate", f"{settings.minrate}k"]
        if settings.buffersize > 0:
            rate += ["-bufsize", str(settings.buffersize * 1024)]
        return rate
    deep = settings.color_depth in (10, 12)
    if settings.crf == "LOSSLESS":
        if codec == "WEBM":
            return ["-lossless", "1", "-b:v", "0"]
        if codec == "H265":
            return ["-x265-params", "log-level=1:lossless=1"]
        if (codec == "H264" and settings.color_depth == 10) or encoder in ("librav1e", "libsvtav1"):
            return ["-qp", "0"]
        return ["-crf", "0", "-b:v", "0"]
    crf = CRF[settings.crf]
    args: list[str] = []
    if codec == "H264" and settings.color_depth == 10:
        crf = max(int(-12.0 + (crf / 51.0) * 63.0), 0)
    elif codec == "H265":
        crf = H265_CRF[settings.crf] - (3 if deep else 0)
        args += ["-x265-params", "log-level=1"]
    if encoder == "librav1e":
        return [*args, "-qp", str(min(max(int(crf / 51.0 * 255.0), 0), 255))]
    return [*args, "-crf", str(crf), "-b:v", "0"]


def video_args(settings: MovieSettings, encoder: str) -> list[str]:
    """Encoder, quality, keyframes, speed, pixel format and colour tags of the video stream."""
    codec = settings.codec
    args = ["-c:v", encoder, *_quality(settings, encoder)]
    if codec not in INTRA_ONLY:
        args += ["-g", str(max(settings.gop, 1))]
    if codec in B_FRAME_CODECS:
        args += ["-bf", str(settings.max_b_frames or 0)]
    if encoder in ("libx264", "libx265"):
        args += ["-preset", X264_PRESETS.get(settings.preset, "medium")]
    elif codec == "WEBM":
        args += ["-deadline", VPX_DEADLINES.get(settings.preset, "good"), "-row-mt", "1"]
    elif encoder in AV1_SPEED:
        option, speeds = AV1_SPEED[encoder]
        args += [option, speeds.get(settings.preset, speeds["GOOD"])]
    if codec == "PRORES":
        args += ["-profile:v", PRORES_PROFILES.get(settings.prores_profile, "2")]
    if codec == "DNXHD":
        args += ["-profile:v", "dnxhr_hq"]  # any frame size (classic DNxHD needs broadcast sizes and bitrates)
    if codec == "H265" and settings.container in ("MPEG4", "QUICKTIME"):
        args += ["-tag:v", "hvc1"]  # what Apple's players need, as Blender tags it
    fmt = pixel_format(settings)
    if fmt is not None:
        args += ["-pix_fmt", fmt]
        if fmt not in RGB_FORMATS:
            args += ["-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709", "-color_range", "tv"]
    return args


def video_filter(settings: MovieSettings) -> str | None:
    """Even dimensions for chroma-subsampled formats; RGB -> YUV with the BT.709 matrix the stream is tagged with."""
    fmt = pixel_format(settings)
    if fmt is None:
        return None
    if fmt in RGB_FORMATS:
        return f"format={fmt}"
    steps = []
    if "420" in fmt or "422" in fmt:
        steps.append("pad=w=ceil(iw/2)*2:h=ceil(ih/2)*2")
    steps.append(f"scale=out_color_matrix=bt709:out_range=tv,format={fmt}")
    return ",".join(steps)


def audio_args(settings: MovieSettings, encoder: str) -> list[str]:
    args = ["-c:a", encoder, "-ar", str(settings.audio_mixrate), "-ac", str(settings.channel_count)]
    if encoder not in ("flac", "pcm_s16le"):
        args += ["-b:a", f"{settings.audio_bitrate}k"]
    if abs(settings.audio_volume - 1.0) > 1e-6:
        args += ["-filter:a", f"volume={settings.audio_volume:.6g}"]
    return args


DV_SIZES = {(720, 576): "PAL, 25 fps", (720, 480): "NTSC, 29.97 fps"}
MIN_DNXHR_SIZE = (256, 120)


def check_size(settings: MovieSettings, width: int, height: int) -> None:
    """Codecs with size rules fail here with the rule, rather than with FFmpeg's "Invalid argument"."""
    if settings.codec == "DV" and (width, height) not in DV_SIZES:
        sizes = ", ".join(f"{w}x{h} ({what})" for (w, h), what in DV_SIZES.items())
        raise StitchFailed(f"DV video must be {sizes}; the scene renders {width}x{height}: change the size or codec")
    if settings.codec == "DNXHD" and (width < MIN_DNXHR_SIZE[0] or height < MIN_DNXHR_SIZE[1]):
        raise StitchFailed(
            f"DNxHR needs at least {MIN_DNXHR_SIZE[0]}x{MIN_DNXHR_SIZE[1]} pixels; the scene renders {width}x{height}"
        )


def command(
    binary: str,
    pattern: Path,
    fps_num: int,
    fps_den: int,
    settings: MovieSettings,
    out: Path,
    audio: Path | None = None,
) -> list[str]:
    """The FFmpeg command line that writes ``settings`` from the numbered frames ``pattern`` (and a mixed-down
    sound file) into ``out`` at the plan's exact frame rate."""
    encoders = available_encoders(binary)
    encoder = video_encoder(settings, encoders)
    line = [binary, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    line += ["-framerate", f"{fps_num}/{fps_den}", "-start_number", "0", "-i", str(pattern)]
    if audio is not None:
        line += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0"]
    flt = video_filter(settings)
    if flt:
        line += ["-vf", flt]
    line += video_args(settings, encoder)
    if audio is not None:
        line += audio_args(settings, audio_encoder(settings, encoders))
    muxer = MUXERS.get(settings.container, "mp4")
    if muxer in ("mp4", "mov"):
        line += ["-movflags", "+faststart"]
    line += ["-f", muxer, str(out)]
    return line
