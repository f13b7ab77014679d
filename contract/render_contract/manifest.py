"""``jobs/<jobId>/manifest.json``: the files of a job's tree, by content.

``{"version": 1, "main": PATH, "files": {PATH: SHA256_HEX, ...}}``: each path is a job tree path (:mod:`.paths`)
and each digest names an upload at ``cas/sha256/<hex>``; ``main`` is the .blend to open and is among the files.
The client writes it, the Lambda validates it (and checks every upload exists) before any render is paid for, the
worker rebuilds the tree from it. All three use :meth:`Manifest.parse`, so they accept and refuse alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput
from .layout import cas_key, check_sha256
from .paths import check_tree, check_tree_path

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 32 * 1024 * 1024
MAX_MANIFEST_FILES = 100_000
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    main: str
    files: dict[str, str]
    """Job tree path -> SHA-256 hex digest."""

    def __post_init__(self) -> None:
        if not self.files:
            raise InvalidInput("a manifest lists at least its main file")
        if len(self.files) > MAX_MANIFEST_FILES:
            raise InvalidInput(f"manifest lists more than {MAX_MANIFEST_FILES} files")
        check_tree(self.files)
        for digest in self.files.values():
            check_sha256(digest)
        if check_tree_path(self.main) not in self.files:
            raise InvalidInput(f"manifest main {self.main!r:.200} is not among its files")

    @property
    def main_digest(self) -> str:
        return self.files[self.main]

    def cas_keys(self) -> set[str]:
        return {cas_key(digest) for digest in self.files.values()}

    def to_dict(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "main": self.main, "files": dict(sorted(self.files.items()))}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def parse(cls, data: bytes | str) -> Manifest:
        """Validate a manifest's bytes (every path, digest, limit); ``InvalidInput`` names the first problem."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise InvalidInput(f"manifest is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB")
        try:
            loaded: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput("manifest is not valid JSON") from None
        if not isinstance(loaded, dict) or loaded.get("version") != MANIFEST_VERSION:
            version = loaded.get("version") if isinstance(loaded, dict) else None
            raise InvalidInput(f"manifest must be an object with version {MANIFEST_VERSION}, got {version!r:.40}")
        files = loaded.get("files")
        if not isinstance(files, dict) or not files:
            raise InvalidInput("manifest 'files' must map relative paths to sha256 digests")
        return cls(main=loaded.get("main"), files=files)  # type: ignore[arg-type]  # checked in __post_init__
