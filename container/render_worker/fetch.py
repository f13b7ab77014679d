"""Materialise a job's inputs in a local work directory: the manifest's files at their relative paths, or the
single .blend.

The manifest (``jobs/<id>/manifest.json``) maps relative paths to SHA-256 digests of content-addressed uploads
(``cas/sha256/<hex>`` in the same bucket). Relative paths keep the artist's ``//textures/...`` links working.
A path that is absolute or climbs out with ``..`` could overwrite anything the worker can write, so it is refused
(``InvalidInput``) before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from render_on_aws.core import layout
from render_on_aws.core.errors import InvalidInput

from . import s3io

log = logging.getLogger("render_worker")
MANIFEST_VERSION = 1
PARALLEL_DOWNLOADS = 16


def is_manifest(input_uri: str) -> bool:
    """A plan's ``input_uri`` names either the .blend itself or the job's manifest.json."""
    return layout.S3Uri.parse(input_uri).key.endswith("manifest.json")


def safe_relative(rel: str) -> PurePosixPath:
    """A manifest path as a safe relative path, or ``InvalidInput``."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise InvalidInput(f"manifest path {rel!r} is empty or not text")
    path = PurePosixPath(rel.replace("\\", "/"))
    if path.is_absolute() or rel.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise InvalidInput(f"manifest path {rel!r} is absolute")
    if any(part == ".." for part in path.parts):
        raise InvalidInput(f"manifest path {rel!r} leaves the job's folder ('..')")
    if not path.parts or path.parts == (".",):
        raise InvalidInput(f"manifest path {rel!r} names no file")
    return path


def _inside(root: Path, rel: PurePosixPath) -> Path:
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidInput(f"manifest path {str(rel)!r} resolves outside the job's folder")
    return target


def parse_manifest(data: bytes) -> tuple[PurePosixPath, dict[PurePosixPath, str]]:
    """(main file, {relative path: sha256 hex}), every path and digest checked."""
    try:
        manifest: Any = json.loads(data)
    except ValueError as exc:
        raise InvalidInput(f"manifest is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        raise InvalidInput(
            f"unsupported manifest version {manifest.get('version') if isinstance(manifest, dict) else None!r}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InvalidInput("manifest lists no files")
    checked = {safe_relative(rel): layout.check_sha256(digest) for rel, digest in files.items()}
    main = safe_relative(manifest.get("main", ""))
    if main not in checked:
        raise InvalidInput(f"manifest's main file {str(main)!r} is not among its files")
    return main, checked


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def materialise(s3: Any, input_uri: str, main_file: str, root: Path) -> Path:
    """Downloads the inputs under ``root``; returns the local path of the main .blend."""
    uri = layout.S3Uri.parse(input_uri)
    root.mkdir(parents=True, exist_ok=True)
    if not is_manifest(input_uri):
        rel = safe_relative(main_file or PurePosixPath(uri.key).name)
        target = _inside(root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3io.download(s3, uri.bucket, uri.key, target)
        log.info("fetched %s -> %s", uri, rel)
        return target

    main, files = parse_manifest(s3io.read_bytes(s3, uri.bucket, uri.key))
    targets = {rel: _inside(root, rel) for rel in files}
    for target in targets.values():
        target.parent.mkdir(parents=True, exist_ok=True)

    def fetch_one(rel: PurePosixPath) -> None:
        s3io.download(s3, uri.bucket, layout.cas_key(files[rel]), targets[rel])
        # Content-addressed: the bytes must hash to their name, or the upload was corrupted for good.
        if _sha256(targets[rel]) != files[rel]:
            raise InvalidInput(f"{rel} does not match its digest {files[rel]}")

    with ThreadPoolExecutor(max_workers=min(PARALLEL_DOWNLOADS, len(files))) as pool:
        for future in [pool.submit(fetch_one, rel) for rel in files]:
            future.result()
    log.info("fetched %d files of manifest %s (main %s)", len(files), uri, main)
    return targets[main]
