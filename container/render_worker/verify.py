"""Is a rendered image whole? A structural check per still format, standard library only.

Why: Blender reports a frame as FINISHED even when the disk filled up under it, and a frame in S3 is trusted from
then on (the retry skips it, the stitch encodes it). A truncated PNG becomes a grey smear or a stitch failure
hours later. Decoding every frame would need an image library per format; checking each format's own structure
(signatures, lengths, CRCs, end markers, declared sizes against the file's size) catches truncation and foreign
files for the cost of reading the file once, with nothing to install.

Each ``check_<format>`` takes the file's bytes (``bytes`` or an ``mmap``) and raises :class:`FrameDefect` naming
what is wrong; :func:`defect` dispatches by extension and returns the reason or ``None`` when the image is whole.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

Buffer = bytes | mmap.mmap

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXR_MAGIC = b"\x76\x2f\x31\x01"
EXR_MULTIPART = 0x1000
EXR_TILED = 0x200
EXR_LONG_NAMES = 0x400
EXR_NON_IMAGE = 0x800
EXR_SCANLINES_PER_CHUNK = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}
"""Compression id -> scan lines per chunk (NONE, RLE, ZIPS, ZIP, PIZ, PXR24, B44, B44A, DWAA, DWAB)."""


class FrameDefect(ValueError):
    """What makes an image file not whole; the worker turns it into ``CorruptFrame`` for its frame."""


def _need(data: Buffer, end: int, what: str) -> None:
    if end > len(data):
        raise FrameDefect(f"truncated: {what} needs {end} bytes, the file has {len(data)}")


def check_png(data: Buffer) -> None:
    """Signature, IHDR first (13 bytes), every chunk's CRC, at least one IDAT, IEND last."""
    _need(data, 8, "the signature")
    if data[:8] != PNG_SIGNATURE:
        raise FrameDefect("not a PNG (bad signature)")
    pos, first, idat = 8, True, False
    while True:
        _need(data, pos + 8, "a chunk header")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if length > 0x7FFFFFFF:
            raise FrameDefect(f"chunk at byte {pos} declares {length} bytes")
        _need(data, pos + 12 + length, f"chunk {kind.decode('latin-1')} at byte {pos}")
        if first and (kind != b"IHDR" or length != 13):
            raise FrameDefect("first chunk is not a 13-byte IHDR")
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != crc:
            raise FrameDefect(f"chunk {kind.decode(errors='replace')} at byte {pos} fails its CRC")
        first = False
        idat = idat or kind == b"IDAT"
        pos += 12 + length
        if kind == b"IEND":
            break
    if not idat:
        raise FrameDefect("no IDAT chunk (no pixels)")


def check_jpeg(data: Buffer) -> None:
    """SOI, the marker segments up to the scan (each length inside the file, a frame header among them), EOI last."""
    _need(data, 4, "SOI and EOI")
    if data[:2] != b"\xff\xd8":
        raise FrameDefect("not a JPEG (no SOI marker)")
    pos, frame_header = 2, False
    while True:
        _need(data, pos + 4, "a marker segment")
        if data[pos] != 0xFF:
            raise FrameDefect(f"expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise FrameDefect(f"marker FF{marker:02X} at byte {pos} declares length {length}")
        _need(data, pos + 2 + length, f"marker FF{marker:02X} at byte {pos}")
        frame_header = frame_header or (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC))
        pos += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data follows, up to EOI
            break
    if not frame_header:
        raise FrameDefect("no frame header (SOF) before the scan")
    if data[-2:] != b"\xff\xd9":
        raise FrameDefect("truncated: no EOI marker at the end")


def _exr_headers(data: Buffer, multipart: bool, long_names: bool) -> tuple[list[dict[str, tuple[str, bytes]]], int]:
    """The header attributes of each part, and the offset just past the headers."""
    limit = 255 if long_names else 31
    headers: list[dict[str, tuple[str, bytes]]] = []
    pos = 8
    while True:
        attributes: dict[str, tuple[str, bytes]] = {}
        while True:
            end = data.find(b"\x00", pos, pos + limit + 1)
            if end < 0:
                raise FrameDefect(f"truncated or malformed header at byte {pos}")
            if end == pos:  # empty name: end of this header
                pos += 1
                break
            name = bytes(data[pos:end]).decode("latin-1")
            type_end = data.find(b"\x00", end + 1, end + 2 + limit)
            if type_end < 0:
                raise FrameDefect(f"truncated or malformed attribute {name!r}")
            kind = bytes(data[end + 1 : type_end]).decode("latin-1")
            _need(data, type_end + 5, f"attribute {name!r}")
            (size,) = struct.unpack("<i", data[type_end + 1 : type_end + 5])
            if size < 0:
                raise FrameDefect(f"attribute {name!r} declares {size} bytes")
            _need(data, type_end + 5 + size, f"attribute {name!r}")
            attributes[name] = (kind, bytes(data[type_end + 5 : type_end + 5 + size]))
            pos = type_end + 5 + size
        headers.append(attributes)
        if not multipart:
            return headers, pos
        _need(data, pos + 1, "the end of the headers")
        if data[pos] == 0:  # an empty header ends a multi-part file's headers
            return headers, pos + 1


def _exr_chunk_count(header: dict[str, tuple[str, bytes]], tiled: bool) -> int | None:
    if "chunkCount" in header:
        return struct.unpack("<i", header["chunkCount"][1][:4])[0]
    if tiled or "dataWindow" not in header or "compression" not in header:
        return None  # tiled single-part files need the tile description and level mode; the last chunk still counts
    _x0, y0, _x1, y1 = struct.unpack("<4i", header["dataWindow"][1][:16])
    lines = EXR_SCANLINES_PER_CHUNK.get(header["compression"][1][0])
    if lines is None:
        raise FrameDefect(f"unknown compression {header['compression'][1][0]}")
    return -(-(y1 - y0 + 1) // lines)


def check_exr(data: Buffer) -> None:
    """Magic 76 2f 31 01, the header(s) up to their end, the offset table inside the file, the last chunk whole."""
    _need(data, 8, "the magic number and version")
    if data[:4] != EXR_MAGIC:
        raise FrameDefect("not an OpenEXR file (bad magic number)")
    (version,) = struct.unpack("<I", data[4:8])
    multipart, tiled = bool(version & EXR_MULTIPART), bool(version & EXR_TILED)
    if version & EXR_NON_IMAGE:
        raise FrameDefect("deep-data OpenEXR is not a rendered frame")
    headers, pos = _exr_headers(data, multipart, bool(version & EXR_LONG_NAMES))
    counts = [_exr_chunk_count(header, tiled) for header in headers]
    if any(count is None for count in counts):
        if not tiled:
            raise FrameDefect("the header lacks the data window or the compression")
        _need(data, pos + 8, "the chunk offset table")  # tiled, no chunkCount: the first offset must still fit
        (first,) = struct.unpack("<Q", data[pos : pos + 8])
        _need(data, first + 1, "the first tile")
        return
    total = sum(count for count in counts if count is not None)
    if total <= 0:
        raise FrameDefect("the header declares no chunks")
    _need(data, pos + 8 * total, "the chunk offset table")
    offsets = struct.unpack(f"<{total}Q", data[pos : pos + 8 * total])
    table_end = pos + 8 * total
    for offset in offsets:
        if not table_end <= offset < len(data):
            raise FrameDefect(f"truncated: a chunk starts at byte {offset}, the file has {len(data)}")
    last = max(offsets)
    # A chunk is [part number] then y (scan lines) or 4 tile coordinates, then the packed size and the data.
    head = (4 if multipart else 0) + (16 if tiled else 4)
    _need(data, last + head + 4, "the last chunk's header")
    (size,) = struct.unpack("<i", data[last + head : last + head + 4])
    _need(data, last + head + 4 + max(size, 0), "the last chunk")


def check_tiff(data: Buffer) -> None:
    """Byte order mark and 42, the first IFD inside the file, and every strip or tile it declares inside the file."""
    _need(data, 8, "the header")
    order = bytes(data[:2])
    if order not in (b"II", b"MM"):
        raise FrameDefect("not a TIFF (bad byte order mark)")
    end = "<" if order == b"II" else ">"
    (magic,) = struct.unpack(end + "H", data[2:4])
    if magic != 42:
        raise FrameDefect(f"not a classic TIFF (magic {magic})")
    (ifd,) = struct.unpack(end + "I", data[4:8])
    _need(data, ifd + 2, "the first IFD")
    (entries,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    _need(data, ifd + 2 + 12 * entries + 4, "the first IFD's entries")
    sizes = {1: 1, 3: 2, 4: 4, 16: 8}
    codes = {1: "B", 3: "H", 4: "I", 16: "Q"}
    values: dict[int, tuple[int, ...]] = {}
    for n in range(entries):
        at = ifd + 2 + 12 * n
        tag, kind, count = struct.unpack(end + "HHI", data[at : at + 8])
        if tag not in (273, 279, 324, 325) or kind not in sizes:
            continue
        length = sizes[kind] * count
        where = at + 8
        if length > 4:
            (where,) = struct.unpack(end + "I", data[at + 8 : at + 12])
            _need(data, where + length, f"tag {tag}'s values")
        values[tag] = struct.unpack(f"{end}{count}{codes[kind]}", data[where : where + length])
    offsets, counts = values.get(273) or values.get(324), values.get(279) or values.get(325)
    if not offsets or not counts or len(offsets) != len(counts):
        raise FrameDefect("the first IFD declares no strips or tiles")
    furthest = max(offset + count for offset, count in zip(offsets, counts, strict=True))
    _need(data, furthest, "the image data its IFD declares")


def check_webp(data: Buffer) -> None:
    """RIFF header with the WEBP form type, and the RIFF size it declares equal to the file's."""
    _need(data, 16, "the RIFF header and the first chunk")
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise FrameDefect("not a WebP (no RIFF/WEBP header)")
    (size,) = struct.unpack("<I", data[4:8])
    if size + 8 != len(data):
        raise FrameDefect(f"truncated: RIFF declares {size + 8} bytes, the file has {len(data)}")
    if bytes(data[12:16]) not in (b"VP8 ", b"VP8L", b"VP8X"):
        raise FrameDefect("the first chunk is not VP8, VP8L or VP8X")


def check_bmp(data: Buffer) -> None:
    """'BM', the file size it declares equal to the file's (or, when 0, the pixel array inside the file)."""
    _need(data, 26, "the file and DIB headers")
    if data[:2] != b"BM":
        raise FrameDefect("not a BMP (no 'BM')")
    size, _reserved, pixels, dib = struct.unpack("<IIII", data[2:18])
    if size and size != len(data):
        raise FrameDefect(f"truncated: the header declares {size} bytes, the file has {len(data)}")
    if dib < 12 or pixels < 14 + dib:
        raise FrameDefect(f"bad header sizes (DIB {dib} bytes, pixels at {pixels})")
    _need(data, 14 + dib, "the DIB header")
    if dib >= 40:
        width, height, _planes, bits, compression, image = struct.unpack("<iiHHII", data[18:38])
        if not image and compression in (0, 3):  # uncompressed: rows of whole 32-bit words
            image = ((width * bits + 31) // 32) * 4 * abs(height)
        _need(data, pixels + image, "the pixel array")
    elif pixels >= len(data):
        raise FrameDefect("truncated: no pixel array")


CHECKS: dict[str, Callable[[Buffer], None]] = {
    "png": check_png,
    "jpg": check_jpeg,
    "jpeg": check_jpeg,
    "exr": check_exr,
    "tif": check_tiff,
    "tiff": check_tiff,
    "webp": check_webp,
    "bmp": check_bmp,
}


def defect(data: Buffer, extension: str) -> str | None:
    """Why the image is not whole, or None when it is. An extension without a check is itself a defect."""
    check = CHECKS.get(extension.lower().lstrip("."))
    if check is None:
        return f"no check for .{extension} images"
    if not len(data):
        return "empty file"
    try:
        check(data)
    except FrameDefect as exc:
        return str(exc)
    except (struct.error, IndexError, ValueError, OverflowError) as exc:  # malformed beyond what the checks name
        return f"malformed: {exc}"
    return None


def file_defect(path: os.PathLike[str] | str, extension: str | None = None) -> str | None:
    """:func:`defect` of a file, read through a memory map (a 4K EXR is not copied into memory)."""
    path = Path(path)
    ext = extension or path.suffix
    if not path.is_file():
        return "no such file"
    if path.stat().st_size == 0:
        return "empty file"
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return defect(data, ext)
