"""Scene facts of a .blend on local disk, read with blender-asset-tracer (BAT): no hand-written parser, no bpy.

BAT understands every header Blender has written (``BLENDER-v279`` and 5.0's ``BLENDER17-01v0500``) and reads only
block headers plus the few blocks we ask for, so memory stays flat in the file size. Gzip and Zstandard files
(detected by BAT) are streamed to an uncompressed copy beside the download first, so the copy's lifetime is ours
(see :func:`read_facts`). What this module adds is Blender's own meaning of the bytes:

* which scene Blender renders: the one named by the caller, else ``FileGlobal.curscene`` (Blender writes the
  window's scene there and ``blender -b file -a`` renders it), else the first window's scene, else the only scene.
  A file with several scenes and no active one is an error rather than a guess.
* whether that scene can render: ``scene.camera``, or a camera-bound timeline marker, or (as Blender does when
  ``scene.camera`` is unset) any camera object in the scene's collections (2.8+) or bases (2.7x).
* the output format as Blender's RNA name, mapped from ``ImageFormatData.imtype`` (values checked against
  bpy 5.0.1 by saving every format and reading it back; legacy values from ``DNA_scene_types.h``).

Every way a file can be unreadable (not a .blend, corrupt, truncated, empty, missing DNA) becomes
:class:`BlendFileUnreadable`; the other named errors come from the scene (``SceneNotFound``). ``NoCamera`` is the
caller's decision: the facts only say ``has_camera``.
"""

from __future__ import annotations

import errno
import gzip
import itertools
import logging
import os
import re
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import zstandard
from blender_asset_tracer import blendfile
from blender_asset_tracer.blendfile import exceptions as bat_exceptions
from blender_asset_tracer.blendfile import magic_compression
from render_contract import blend_dna
from render_contract.errors import BlendFileUnreadable, InvalidInput, SceneNotFound
from render_contract.plan import exact_fps

log = logging.getLogger(__name__)

OB_CAMERA = 11
"""``Object.type`` of a camera (DNA_object_types.h), the same in every Blender version."""

IMTYPE_NAMES: dict[int, str] = {
    0: "TARGA",
    1: "IRIS",
    4: "JPEG",
    7: "IRIZ",
    14: "TARGA_RAW",
    15: "AVI_RAW",
    16: "AVI_JPEG",
    17: "PNG",
    18: "AVICODEC",
    19: "QUICKTIME",
    20: "BMP",
    21: "HDR",
    22: "TIFF",
    23: "OPEN_EXR",
    24: "FFMPEG",
    25: "FRAMESERVER",
    26: "CINEON",
    27: "DPX",
    28: "OPEN_EXR_MULTILAYER",
    29: "DDS",
    30: "JPEG2000",
    31: "H264",
    32: "XVID",
    33: "THEORA",
    34: "PSD",
    35: "WEBP",
}
"""``ImageFormatData.imtype`` -> the RNA name (``image_settings.file_format``). 17, 20-24, 26-28, 30, 35, 0, 1, 4
and 14 were read back from files bpy 5.0.1 wrote; the rest are the legacy movie/odd types of older files."""
FFMPEG_CONTAINERS = {
    0: "MPEG1",
    1: "MPEG2",
    2: "MPEG4",
    3: "AVI",
    4: "QUICKTIME",
    5: "DV",
    7: "AVI",  # XVID: an AVI container
    8: "FLASH",
    9: "MKV",
    10: "OGG",
    12: "WEBM",
}
"""``FFMpegCodecData.type`` -> ``scene.render.ffmpeg.format``; read back from files bpy 5.0.1 wrote (the legacy
H264 type 6 and AV1 13 are mapped by Blender on load to MPEG4/MKV: see :func:`_movie_container`)."""
MOVIE_IMTYPES = frozenset({"FFMPEG", "H264", "XVID", "THEORA"})
"""``imtype`` names that make the scene's output a movie written through FFmpeg."""
AUDIO_CODECS = {
    0: "NONE",
    65536: "PCM",
    86016: "MP2",
    86017: "MP3",
    86018: "AAC",
    86019: "AC3",
    86021: "VORBIS",
    86028: "FLAC",
    86076: "OPUS",
}
"""``r.ffcodecdata.audio_codec`` holds FFmpeg's AVCodecID; these are the ones ``scene.render.ffmpeg.audio_codec``
offers (read back from files bpy 5.0.1 wrote with each)."""

CHUNK = 1024 * 1024
"""Streaming buffer for decompression: memory stays flat whatever the file size."""

# What BAT and struct raise on bytes that are not a sound .blend. OSError is handled apart: only the ones without
# an errno are the file's fault; a full disk is not.
_UNREADABLE = (
    bat_exceptions.BlendFileError,
    bat_exceptions.SegmentationFault,
    bat_exceptions.NoReaderImplemented,
    struct.error,
    ValueError,
    EOFError,
    KeyError,
    IndexError,
    TypeError,
    UnicodeDecodeError,
    zstandard.ZstdError,
    gzip.BadGzipFile,
)


R_EXTENSION = 1 << 4
"""``RenderData.scemode`` bit of ``use_file_extension`` (read back from files bpy 5.0.1 wrote)."""
R_IMF_PLANES = {8: "BW", 24: "RGB", 32: "RGBA"}
"""``ImageFormatData.planes`` -> ``color_mode``."""
R_IMF_CHAN_DEPTH = {1: "1", 2: "8", 4: "10", 8: "12", 16: "16", 32: "24", 64: "32"}
"""``ImageFormatData.depth`` (one bit per depth) -> ``color_depth``."""
EXR_CODECS = {0: "NONE", 1: "PXR24", 2: "ZIP", 3: "PIZ", 4: "RLE", 5: "ZIPS", 6: "B44", 7: "B44A", 8: "DWAA", 9: "DWAB"}
"""``ImageFormatData.exr_codec`` -> ``exr_codec`` (bpy 5.0.1's enum values)."""


@dataclass(frozen=True)
class OutputFacts:
    """The scene's output path and image settings, in RNA names (empty when the file does not say)."""

    path: str = ""
    use_file_extension: bool = True
    color_mode: str = ""
    color_depth: str = ""
    quality: int = 0
    exr_codec: str = ""
    file_output_nodes: tuple[str, ...] = ()
    """``<node name>: <folder><file name>`` of each unmuted compositor File Output node (their files come back)."""
    camera_name: str = ""
    """``scene.camera``'s name: the ``{camera_name}`` of Blender 5's path templates."""
    fps: float = 0.0
    """``frs_sec / frs_sec_base`` in Blender's own float arithmetic: the ``{fps}`` of path templates."""


@dataclass(frozen=True)
class SceneFacts:
    """What the plan needs from one scene, in the file's own values (overrides are the caller's business)."""

    name: str
    frame_start: int
    frame_end: int
    frame_step: int
    fps_num: int
    fps_den: int
    resolution_x: int
    resolution_y: int
    resolution_percentage: int
    file_format: str
    engine: str
    has_camera: bool
    movie_container: str = ""
    """Blender's FFmpeg container name (``MPEG4``, ``QUICKTIME``, ...) when the output is a movie, else empty."""
    movie_audio: str = ""
    """A movie output's sound settings in words (``AAC 192 kb/s, stereo, 48000 Hz``), ``NONE`` without an audio
    codec; empty for stills."""
    output: OutputFacts = field(default_factory=lambda: OutputFacts())
    """The output path and image settings (how the farm names and writes the frames)."""

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)


TXT_ISSCRIPT = 1 << 4
"""``Text.flags`` bit of a registered text block (``use_module``): Blender runs it when the file opens."""
DRIVER_TYPE_PYTHON = 1
"""``ChannelDriver.type`` of a scripted-expression driver."""
SIMPLE_CONSTANTS = frozenset({"frame", "pi", "True", "False"})
"""Names the simple-expression evaluator knows besides the driver's variables (``frame`` is the current frame)."""
SIMPLE_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    **dict.fromkeys(("radians", "degrees", "abs", "fabs", "floor", "ceil", "trunc", "round", "int"), (1, 1)),
    **dict.fromkeys(("sin", "cos", "tan", "asin", "acos", "atan", "exp", "sqrt"), (1, 1)),
    "log": (1, 2),
    **dict.fromkeys(["atan2", "pow", "fmod"], (2, 2)),
    **dict.fromkeys(["min", "max"], (1, None)),
    "clamp": (1, 3),  # 1 or 3 arguments, not 2 (see _SimpleParser)
    **dict.fromkeys(["lerp", "smoothstep"], (3, 3)),
}
"""Functions of Blender's ``BLI_expr_pylike_eval`` with their (least, most) arguments, None: any number. Checked
against bpy 5.0.1's ``ChannelDriver.is_simple_expression`` for 0 to 4 arguments of each (tests/test_blend_scripts.py):
``ln``, ``signum``, ``log10``, ``hypot`` and the operators ``**``, ``%`` and ``//`` are *not* simple there."""
_SIMPLE_TOKEN = re.compile(
    r"[ \t\n\r\f\v]*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|[-+*/(),<>]))"
)
_COMPARISONS = frozenset({"<", ">", "<=", ">=", "==", "!="})
MAX_REPORTED = 200


@dataclass(frozen=True)
class PythonUse:
    """What in the file needs Python to render as in the artist's Blender (the farm's auto-execution is off)."""

    scripts: tuple[str, ...] = ()
    """Registered text blocks (Text > Register): Blender runs them when the file opens."""
    drivers: tuple[str, ...] = ()
    """``<ID>: <path>[<index>] = <expression>`` for every scripted driver that is no simple expression."""

    def describe(self) -> list[str]:
        return [f"registered script {name}" for name in self.scripts] + [f"Python driver {d}" for d in self.drivers]


def needs_python(expression: str, variables: frozenset[str] = frozenset()) -> bool:
    """Whether a scripted driver's expression needs full Python, i.e. is no simple expression for Blender.

    Conservative: the expression is parsed with the grammar of Blender's simple-expression evaluator
    (``BLI_expr_pylike_eval``, used by Blender 2.80 and later before it falls back to Python) and anything it does
    not plainly accept needs Python: attribute access, subscripts, strings, unknown names, lambdas, ``**``, ``%``,
    tuples, a function with the wrong number of arguments. Accepted: numbers (``1``, ``1.5``, ``.5``,
    ``1e-3``), ``frame``, ``pi``, ``True``, ``False``, the driver's variable names, unary and binary ``+ - * /``,
    comparisons (chained too), ``not and or``, ``a if c else b``, parentheses and :data:`SIMPLE_FUNCTIONS`. The
    empty expression needs nothing (Blender's value is 0 without Python).
    """
    if expression == "":
        return False
    tokens: list[tuple[str, str]] = []
    position = 0
    stripped = expression.rstrip(" \t\n\r\f\v")
    while position < len(stripped):
        match = _SIMPLE_TOKEN.match(stripped, position)
        if match is None or match.end() == position:
            return True
        kind = str(match.lastgroup)
        tokens.append((kind, match[kind]))
        position = match.end()
    parser = _SimpleParser(tokens, variables)
    try:
        parser.expression()
    except _NotSimple:
        return True
    return parser.position != len(tokens)


class _NotSimple(Exception):
    pass


class _SimpleParser:
    """Recursive descent over the tokens, in the precedence of BLI_expr_pylike_eval (and Python)."""

    def __init__(self, tokens: list[tuple[str, str]], variables: frozenset[str]) -> None:
        self.tokens = tokens
        self.variables = variables
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self, *texts: str) -> bool:
        if self.position < len(self.tokens) and self.tokens[self.position][0] != "number" and self.peek() in texts:
            self.position += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.take(text):
            raise _NotSimple

    def expression(self) -> None:  # or_test ["if" or_test "else" expression]
        self.or_test()
        if self.take("if"):
            self.or_test()
            self.expect("else")
            self.expression()

    def or_test(self) -> None:
        self.and_test()
        while self.take("or"):
            self.and_test()

    def and_test(self) -> None:
        self.not_test()
        while self.take("and"):
            self.not_test()

    def not_test(self) -> None:
        if self.take("not"):
            self.not_test()
        else:
            self.comparison()

    def comparison(self) -> None:
        self.sum()
        while self.take(*_COMPARISONS):
            self.sum()

    def sum(self) -> None:
        self.product()
        while self.take("+", "-"):
            self.product()

    def product(self) -> None:
        self.unary()
        while self.take("*", "/"):
            self.unary()

    def unary(self) -> None:
        if self.take("+", "-"):
            self.unary()
        else:
            self.atom()

    def atom(self) -> None:
        if self.position >= len(self.tokens):
            raise _NotSimple
        kind, text = self.tokens[self.position]
        self.position += 1
        if kind == "number":
            return
        if kind == "op":
            if text != "(":
                raise _NotSimple
            self.expression()
            self.expect(")")
            return
        if self.take("("):
            self.call(text)
        elif text not in SIMPLE_CONSTANTS and text not in self.variables:
            raise _NotSimple

    def call(self, function: str) -> None:
        if function not in SIMPLE_FUNCTIONS:
            raise _NotSimple
        count = 0
        if not self.take(")"):
            self.expression()
            count = 1
            while self.take(","):
                self.expression()
                count += 1
            self.expect(")")
        least, most = SIMPLE_FUNCTIONS[function]
        if count < least or (most is not None and count > most) or (function == "clamp" and count == 2):
            raise _NotSimple


def python_use(bfile: blendfile.BlendFile) -> PythonUse:
    """Registered text blocks and Python drivers of every data block with animation data."""
    scripts = sorted(
        (block.id_name or b"").decode("utf-8", "replace")[2:]
        for block in bfile.find_blocks_from_code(b"TX")
        if int(block.get(b"flags")) & TXT_ISSCRIPT
    )
    drivers: list[str] = []
    for block in bfile.blocks:
        if len(drivers) >= MAX_REPORTED or not (block.has_field(b"adt") or block.has_field(b"nodetree")):
            continue  # the DNA says so without reading the block
        if block.code == b"DATA" or not isinstance(block.id_name, bytes):
            continue  # an embedded node tree (DATA, but with an ID name) is reported through its owner below
        owner = block.id_name.decode("utf-8", "replace")[2:]
        drivers.extend(_python_drivers(block, owner))
        # A material's, world's, light's, texture's or (before 5.0) scene's node tree is embedded in its ID, written
        # as a DATA block without an ID name: its drivers are found only through the owner.
        embedded = _deref(block, b"nodetree") if block.has_field(b"nodetree") else None
        if embedded is not None and embedded.has_field(b"adt"):
            drivers.extend(_python_drivers(embedded, f"{owner} node tree"))
    return PythonUse(tuple(scripts[:MAX_REPORTED]), tuple(drivers[:MAX_REPORTED]))


def _python_drivers(block: blendfile.BlendFileBlock, owner: str) -> Iterator[str]:
    """``<owner>: <path>[<index>] = <expression>`` for each scripted driver of ``block`` that needs Python."""
    animation = _deref(block, b"adt") if block.has_field(b"adt") else None
    if animation is None:
        return
    for curve in _iter_list(animation, b"drivers"):
        driver = _deref(curve, b"driver")
        if driver is None or driver.get(b"type") != DRIVER_TYPE_PYTHON:
            continue
        expression = str(driver.get(b"expression", as_str=True))
        names = frozenset(str(var.get(b"name", as_str=True)) for var in _iter_list(driver, b"variables"))
        if needs_python(expression, names):
            path = _deref(curve, b"rna_path")
            where = f"{path.as_string() if path else '?'}[{curve.get(b'array_index')}]"
            yield f"{owner}: {where} = {expression}"


@dataclass(frozen=True)
class BlendFacts:
    blender_version: str
    """The version that wrote the file, from its header: ``"2.79"``, ``"3.1"``, ``"5.0"``."""
    compressed: bool
    scenes: tuple[str, ...]
    """Every scene of the file, in file order."""
    active_scene: str | None
    """The scene Blender renders when none is named, or None when the file does not say."""
    scene: SceneFacts
    """The chosen scene (the named one, else the active one)."""
    python: PythonUse = PythonUse()
    """What needs Python to render as in the artist's Blender."""

    @property
    def python_use(self) -> list[str]:
        return self.python.describe()


def version_string(header_version: int) -> str:
    """279 -> "2.79", 301 -> "3.1", 500 -> "5.0": Blender's own spelling of its version."""
    return f"{header_version // 100}.{header_version % 100}"


def read_facts(path: Path, scene_name: str | None = None) -> BlendFacts:
    """Open ``path`` with BAT and return the chosen scene's facts.

    A compressed file is first streamed, decompressed, next to ``path`` (``<name>.raw``) and deleted afterwards,
    also on errors: BAT would decompress into an anonymous temporary file that an exception's traceback can keep
    alive, so a failing Lambda could leave gigabytes in /tmp. BAT's own detection of the compression is used.

    Raises BlendFileUnreadable, SceneNotFound.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise BlendFileUnreadable(f"{path.name} is empty, not a .blend file")
    raw = path.with_name(path.name + ".raw")
    try:
        compressed = _decompress(path, raw)
        return _read(raw if compressed else path, path.name, compressed, scene_name)
    finally:
        raw.unlink(missing_ok=True)


def _decompress(path: Path, target: Path) -> bool:
    """Stream a gzip or Zstandard file into ``target``; False (nothing written) for an uncompressed one."""
    reason = ""
    with path.open("rb") as source:
        compression = magic_compression.find_compression_type(source)
        if compression == magic_compression.Compression.UNRECOGNISED:
            raise BlendFileUnreadable(f"{path.name} is not a .blend file (neither Blender's header nor compressed)")
        if compression == magic_compression.Compression.NONE:
            return False
        source.seek(0)
        try:
            if compression == magic_compression.Compression.GZIP:
                reader: Any = gzip.GzipFile(fileobj=source, mode="rb")
            else:
                reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
            with reader, target.open("wb") as sink:
                shutil.copyfileobj(reader, sink, CHUNK)
        except (EOFError, zstandard.ZstdError, gzip.BadGzipFile) as exc:
            reason = _describe(exc)
        except OSError as exc:
            if exc.errno is not None:
                raise  # disk full and friends: the machine's problem, not the file's
            reason = _describe(exc)
    if reason:
        raise BlendFileUnreadable(f"{path.name} is a damaged {compression.name.lower()} file: {reason}")
    return True


def _read(path: Path, display: str, compressed: bool, scene_name: str | None) -> BlendFacts:
    reason = ""
    bfile: blendfile.BlendFile | None = None
    try:
        bfile = blendfile.BlendFile(path)
        _check_complete(bfile)
    except _UNREADABLE as exc:
        reason = _describe(exc)
    except OSError as exc:
        if exc.errno not in (None, errno.EINVAL):  # EINVAL: a corrupt block size made BAT seek before the start
            raise
        reason = "a block's size points outside the file" if exc.errno else _describe(exc)
    if bfile is None or reason:
        if bfile is not None:
            bfile.close()
        raise BlendFileUnreadable(f"{display} is not a readable .blend file: {reason or 'no data'}")
    try:
        return _facts(bfile, scene_name, compressed)
    except _UNREADABLE as exc:
        reason = _describe(exc)
    finally:
        bfile.close()
    raise BlendFileUnreadable(f"{display} is a damaged .blend file: {reason}")


def _describe(exc: BaseException) -> str:
    """The reason, without BAT's temporary path (``str()`` of its errors appends the path it read)."""
    text = (str(exc.args[0]) if exc.args else "").strip() or type(exc).__name__
    return text[:300]


def _check_complete(bfile: blendfile.BlendFile) -> None:
    """BAT treats a short block header as the end of the file; Blender would not, so neither do we.

    A sound file ends its block list with a real ``ENDB`` header and every block lies inside the file.
    """
    position = bfile.fileobj.tell()
    size = os.fstat(bfile.fileobj.fileno()).st_size
    header_size = bfile.block_header_struct.size
    bfile.fileobj.seek(max(0, position - header_size))
    if position > size or bfile.fileobj.read(4) != b"ENDB":
        raise bat_exceptions.BlendFileError("truncated: the file ends before its ENDB block", bfile.filepath)
    for block in bfile.blocks:
        if block.file_offset + block.size > size:
            raise bat_exceptions.BlendFileError("truncated: a block runs past the end of the file", bfile.filepath)


def _facts(bfile: blendfile.BlendFile, scene_name: str | None, compressed: bool) -> BlendFacts:
    scene_blocks = bfile.find_blocks_from_code(b"SC")
    names = tuple(blend_dna.id_name(block) for block in scene_blocks)
    if not scene_blocks:
        raise SceneNotFound("the file has no scene")
    active = _active_scene(bfile, scene_blocks)
    if scene_name is not None:
        matches = [block for block in scene_blocks if blend_dna.id_name(block) == scene_name]
        if not matches:
            raise SceneNotFound(f"no scene named {scene_name!r} in the file; it has {_list(names)}")
        chosen = matches[0]
    elif active is not None:
        chosen = active
    elif len(scene_blocks) == 1:
        chosen = scene_blocks[0]
    else:
        raise SceneNotFound(
            f"the file has {len(names)} scenes ({_list(names)}) and marks none as active: name one with 'scene'"
        )
    return BlendFacts(
        blender_version=version_string(bfile.header.version),
        compressed=compressed,
        scenes=names,
        active_scene=blend_dna.id_name(active) if active is not None else None,
        scene=_scene_facts(bfile, chosen),
        python=python_use(bfile),
    )


def _list(names: tuple[str, ...], limit: int = 20) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# The DNA walks are the contract's (render_contract.blend_dna), shared with the client core's simulation check.
_active_scene = blend_dna.active_scene
_deref = blend_dna.deref
_iter_list = blend_dna.iter_list


def _scene_facts(bfile: blendfile.BlendFile, scene: blendfile.BlendFileBlock) -> SceneFacts:
    def render(field: bytes, *more: bytes) -> Any:
        return scene.get((b"r", field, *more))

    frs_sec, frs_sec_base = int(render(b"frs_sec")), float(render(b"frs_sec_base"))
    try:
        fps = exact_fps(frs_sec, frs_sec_base)
    except InvalidInput as exc:
        raise BlendFileUnreadable(f"the scene's frame rate is invalid: {exc}") from None
    imtype = int(render(b"im_format", b"imtype"))
    file_format = IMTYPE_NAMES.get(imtype, f"UNKNOWN_{imtype}")
    engine = scene.get((b"r", b"engine"), default="", as_str=True)
    return SceneFacts(
        name=blend_dna.id_name(scene),
        frame_start=int(render(b"sfra")),
        frame_end=int(render(b"efra")),
        frame_step=int(render(b"frame_step")),
        fps_num=fps.numerator,
        fps_den=fps.denominator,
        resolution_x=int(render(b"xsch")),
        resolution_y=int(render(b"ysch")),
        resolution_percentage=int(render(b"size")),
        file_format=file_format,
        engine=engine or "BLENDER_RENDER",  # files older than 2.5 had no engine field: Blender Internal
        has_camera=_has_camera(scene),
        movie_container=_movie_container(scene) if file_format in MOVIE_IMTYPES else "",
        movie_audio=_movie_audio(scene) if file_format in MOVIE_IMTYPES else "",
        output=_output_facts(scene),
    )


def _movie_audio(scene: blendfile.BlendFileBlock) -> str:
    """The audio the scene's movie asks for, as the panel and the CLI say it before the render."""
    try:
        codec = AUDIO_CODECS.get(int(scene.get((b"r", b"ffcodecdata", b"audio_codec"), default=0)), "")
        channels = int(scene.get((b"r", b"ffcodecdata", b"audio_channels"), default=2))
        rate = int(scene.get((b"r", b"ffcodecdata", b"audio_mixrate"), default=48000))
        bitrate = int(scene.get((b"r", b"ffcodecdata", b"audio_bitrate"), default=192))
    except (KeyError, TypeError, ValueError):
        return ""
    if codec in ("", "NONE"):
        return codec
    quality = "" if codec in ("PCM", "FLAC") else f" {bitrate} kb/s,"
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")
    return f"{codec}{quality} {layout}, {rate} Hz"


def _movie_container(scene: blendfile.BlendFileBlock) -> str:
    """The container of a movie output, as ``scene.render.ffmpeg.format`` names it (MPEG4 when unknown: Blender's
    default, and the container the stitch can always write)."""
    try:
        kind = int(scene.get((b"r", b"ffcodecdata", b"type"), default=2))
    except (KeyError, TypeError, ValueError):
        return "MPEG4"
    return FFMPEG_CONTAINERS.get(kind, "MKV" if kind == 13 else "MPEG4")


def _output_facts(scene: blendfile.BlendFileBlock) -> OutputFacts:
    """``r.pic``, the ``use_file_extension`` bit and ``r.im_format``'s depth, planes, quality and EXR codec."""

    def im_format(name: bytes) -> int:
        return int(scene.get((b"r", b"im_format", name), default=0))

    return OutputFacts(
        path=scene.get((b"r", b"pic"), default="", as_str=True),
        use_file_extension=bool(int(scene.get((b"r", b"scemode"), default=R_EXTENSION)) & R_EXTENSION),
        color_mode=R_IMF_PLANES.get(im_format(b"planes"), ""),
        color_depth=R_IMF_CHAN_DEPTH.get(im_format(b"depth"), ""),
        quality=im_format(b"quality"),
        exr_codec=EXR_CODECS.get(im_format(b"exr_codec"), ""),
        file_output_nodes=_file_output_nodes(scene),
        camera_name=blend_dna.id_name(camera) if (camera := _deref(scene, b"camera")) is not None else "",
        fps=int(scene.get((b"r", b"frs_sec"))) / float(scene.get((b"r", b"frs_sec_base"))),
    )


def _string(block: blendfile.BlendFileBlock, field: bytes) -> str:
    """A ``char[N]`` field, or a ``char *`` one (Blender 5's ``NodeImageMultiFile.file_name``) read from its block."""
    value = block.get(field, default="", as_str=True)
    if isinstance(value, str):
        return value
    target = _deref(block, field)
    if target is None:
        return ""
    return bytes(target.raw_data()).split(b"\x00", 1)[0].decode("utf-8", "replace")


NODE_MUTED = 1 << 9
"""``bNode.flag`` bit of a muted node."""
MAX_NODES = 10_000


def _file_output_nodes(scene: blendfile.BlendFileBlock) -> tuple[str, ...]:
    """The compositor's unmuted File Output nodes: Blender 5's ``compositing_node_group`` (an ID) when the file's
    DNA has the field, else 4.x's embedded ``nodetree`` when ``use_nodes`` is on. The folder is the node
    storage's ``base_path`` (Blender 5's ``directory``) and, in 5.x, its ``file_name``."""
    fields = {field.name.name_only for field in scene.dna_type.fields}
    if b"compositing_node_group" in fields:
        tree = _deref(scene, b"compositing_node_group")
    else:
        tree = _deref(scene, b"nodetree") if scene.get(b"use_nodes", default=0) else None
    if tree is None:
        return ()
    found = []
    for node in itertools.islice(_iter_list(tree, b"nodes"), MAX_NODES):
        if node.get(b"idname", default="", as_str=True) != "CompositorNodeOutputFile":
            continue
        if int(node.get(b"flag", default=0)) & NODE_MUTED:
            continue
        storage = _deref(node, b"storage")
        path = ""
        if storage is not None:
            path = _string(storage, b"base_path") + _string(storage, b"file_name")
        found.append(f"{node.get(b'name', default='', as_str=True)}: {path}")
    return tuple(found)


def _has_camera(scene: blendfile.BlendFileBlock) -> bool:
    """True when Blender will find a camera to render this scene from.

    ``scene.camera`` first; else a timeline marker bound to a camera (Blender switches to it at render time);
    else, as Blender's renderer does when ``scene.camera`` is unset, any camera object in the scene: its master
    collection and children (2.8+) or its bases (2.7x). A scene that renders only sequencer strips is not
    recognised and reports no camera.
    """
    if scene.get(b"camera", default=0):
        return True
    if any(marker.get(b"camera", default=0) for marker in _iter_list(scene, b"markers")):
        return True
    objects = blend_dna.scene_objects(scene)
    return any(ob.get(b"type", default=-1) == OB_CAMERA for ob in objects)
