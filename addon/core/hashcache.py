"""A local cache of content hashes keyed by (absolute path, size, mtime_ns): unchanged files are not read again.

Resubmitting a 200 MB project should cost a few ``stat`` calls, not 200 MB of SHA-256. The cache is one small
JSON file in the user's cache folder (``$RENDER_ON_AWS_CACHE_DIR``, else ``$XDG_CACHE_HOME/render-on-aws``,
``%LOCALAPPDATA%\\render-on-aws`` on Windows, ``~/.cache/render-on-aws``).

Safe for concurrent use (Blender and the command line at once): a save re-reads the file, merges its own new
entries in, and replaces the file atomically (write to a temporary file in the same folder, then ``os.replace``),
so a reader never sees half a file. Two savers racing can lose each other's *new* entries, which only costs a
re-hash later; the cache never returns a wrong hash for a file whose size or mtime changed.

A file modified within :data:`RACY_SECONDS` of being hashed is not cached: a second write in the same timestamp
tick would keep size and mtime and go unnoticed (git's "racy clean" problem; FAT timestamps have 2 s ticks).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CACHE_ENV = "RENDER_ON_AWS_CACHE_DIR"
FILE_NAME = "hashes.json"
VERSION = 1
RACY_SECONDS = 2.0
MAX_ENTRIES = 200_000
"""Beyond this, the entries used longest ago are dropped at save time (a few tens of MB of JSON at most)."""


def cache_dir() -> Path:
    """Where the cache lives; the environment variable lets tests and unusual setups choose."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "render-on-aws"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "render-on-aws"


class HashCache:
    """(absolute path, size, mtime_ns) -> sha256 hex, loaded once, saved with :meth:`save`. Thread-safe."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_dir() / FILE_NAME
        self._lock = threading.Lock()
        self._entries: dict[str, list[Any]] = _read(self.path)
        self._new: dict[str, list[Any]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(path: Path) -> str:
        return os.path.abspath(path)

    def lookup(self, path: Path, stat: os.stat_result) -> str | None:
        """The cached hash of ``path`` if its size and mtime are those it had when hashed, else None."""
        key = self.key(path)
        with self._lock:
            entry = self._new.get(key) or self._entries.get(key)
            if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
                self.hits += 1
                entry[3] = int(time.time())
                self._new.setdefault(key, entry)
                return str(entry[2])
            self.misses += 1
            return None

    def store(self, path: Path, stat: os.stat_result, sha256: str) -> None:
        """Remembers a hash computed from ``path`` while it had ``stat``; racy (just modified) files are skipped."""
        now = time.time()
        if now - stat.st_mtime_ns / 1e9 < RACY_SECONDS:
            return
        with self._lock:
            self._new[self.key(path)] = [stat.st_size, stat.st_mtime_ns, sha256, int(now)]

    def save(self) -> None:
        """Merges the new entries into the file on disk and replaces it atomically; never raises for I/O."""
        with self._lock:
            if not self._new:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                merged = _read(self.path)
                merged.update(self._new)
                if len(merged) > MAX_ENTRIES:
                    newest = sorted(merged.items(), key=lambda item: item[1][3], reverse=True)[:MAX_ENTRIES]
                    merged = dict(newest)
                _write_atomically(self.path, {"version": VERSION, "entries": merged})
            except OSError:
                return  # a cache that cannot be written only means hashing again next time
            self._entries = merged
            self._new = {}


def _read(path: Path) -> dict[str, list[Any]]:
    """The entries of a cache file; a missing, corrupt or foreign file is an empty cache, not an error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return {
        key: entry
        for key, entry in data["entries"].items()
        if isinstance(entry, list)
        and len(entry) == 4
        and isinstance(entry[0], int)
        and isinstance(entry[1], int)
        and isinstance(entry[2], str)
        and isinstance(entry[3], int)
    }


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, separators=(",", ":"))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
