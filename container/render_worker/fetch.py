"""Materialise a job's inputs in a local work directory: the manifest's files at their relative paths, or the
single .blend.

The manifest (``jobs/<id>/manifest.json``) maps relative paths to SHA-256 digests of content-addressed uploads
(``cas/sha256/<hex>`` in the same bucket). Relative paths keep the artist's ``//textures/...`` links working.
The manifest and its paths are checked by the contract's one rule (:mod:`render_contract.manifest`,
:mod:`render_contract.paths`), the same the client and the Lambda apply, before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from render_contract import layout
from render_contract.errors import InvalidInput
from render_contract.manifest import MANIFEST_NAME, Manifest
from render_contract.paths import check_tree_path

from . import s3io

log = logging.getLogger("render_worker")
PARALLEL_DOWNLOADS = 16


def is_manifest(input_uri: str) -> bool:
    """A plan's ``input_uri`` names either the .blend itself or the job's manifest.json."""
    return layout.S3Uri.parse(input_uri).key.endswith(MANIFEST_NAME)


def _inside(root: Path, rel: str) -> Path:
    """Where a checked job tree path lands under ``root`` (and a last guard against links that leave it)."""
    target = (root / PurePosixPath(check_tree_path(rel))).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidInput(f"manifest path {rel!r} resolves outside the job's folder")
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def materialise(s3: Any, input_uri: str, main_file: str, root: Path, keep: Callable[[str], bool] | None = None) -> Path:
    """Downloads the inputs under ``root``; returns the local path of the main .blend. With ``keep``, only the main
    file and the manifest's paths ``keep`` accepts are downloaded (the stitch needs the sounds, not the textures)."""
    uri = layout.S3Uri.parse(input_uri)
    root.mkdir(parents=True, exist_ok=True)
    if not is_manifest(input_uri):
        target = _inside(root, main_file or PurePosixPath(uri.key).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3io.download(s3, uri.bucket, uri.key, target)
        log.info("fetched %s -> %s", uri, target.relative_to(root.resolve()))
        return target

    manifest = Manifest.parse(s3io.read_bytes(s3, uri.bucket, uri.key))
    files = {rel: digest for rel, digest in manifest.files.items() if keep is None or rel == manifest.main or keep(rel)}
    targets = {rel: _inside(root, rel) for rel in files}
    for target in targets.values():
        target.parent.mkdir(parents=True, exist_ok=True)

    def fetch_one(rel: str) -> None:
        s3io.download(s3, uri.bucket, layout.cas_key(files[rel]), targets[rel])
        # Content-addressed: the bytes must hash to their name, or the upload was corrupted for good.
        if _sha256(targets[rel]) != files[rel]:
            raise InvalidInput(f"{rel} does not match its digest {files[rel]}")

    with ThreadPoolExecutor(max_workers=min(PARALLEL_DOWNLOADS, len(files))) as pool:
        for future in [pool.submit(fetch_one, rel) for rel in files]:
            future.result()
    log.info("fetched %d files of manifest %s (main %s)", len(files), uri, manifest.main)
    return targets[manifest.main]
