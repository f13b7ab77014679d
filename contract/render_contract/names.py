"""Job names: the display name the artist chose, and the key-safe form of it used in keys and file names."""

from __future__ import annotations

import re
import unicodedata

JOB_NAME_LIMIT = 128
"""A display name keeps at most 128 characters (a Batch job name's limit)."""
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


def safe_name(name: str, limit: int = 64) -> str:
    """A job name made safe for an S3 key, a Batch job name and a file name.

    Keeps letters, digits, '.', '_' and '-' (accents folded to ASCII), turns every other run into '_', never
    starts with '.' (so no '..'), and is never empty.
    """
    folded = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    cleaned = _SAFE_NAME.sub("_", folded).strip("._-")[:limit].strip("._-")
    return cleaned or "render"


def clean_display_name(name: str) -> str:
    """A job's display name: control, surrogate and bidirectional-override characters removed, 128 characters."""
    kept = (
        " " if char in "\t\r\n\v\f" else char
        for char in name
        if unicodedata.category(char) not in {"Cc", "Cs", "Zl", "Zp"} or char in "\t\r\n\v\f"
    )
    text = "".join(char for char in kept if char not in _BIDI_CONTROLS)
    return " ".join(text.split())[:JOB_NAME_LIMIT].strip()
