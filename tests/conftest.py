"""Shared fixtures: a real S3 API over HTTP (moto server), real bpy-made scenes, the embedded local cloud."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from localcloud.process import LocalCloudProcess
from localcloud.process import start as start_local_cloud
from scripts import demo_scene

ROOT = Path(__file__).resolve().parent.parent
BLENDFILES = ROOT / "tests" / "data" / "blendfiles"
"""Real .blend files written by Blender 2.79 to 3.x (see its README.md): the repository holds all its tests need."""
REGION = "us-east-1"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A plain moto server (S3 and friends over real HTTP) for tests below the state machine."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    """Points boto3 (in this process and in subprocesses that inherit os.environ) at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


@pytest.fixture
def bucket(aws_env: str) -> str:
    """A fresh bucket on the moto server, unique per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def own_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hash cache of the test's own (the CLI's and packing's ``RENDER_ON_AWS_CACHE_DIR``), so no test reuses another's
    hashes and nothing is written under the real HOME."""
    cache = tmp_path / "hash-cache"
    monkeypatch.setenv("RENDER_ON_AWS_CACHE_DIR", str(cache))
    return cache


make_scene = demo_scene.make
"""Writes a real .blend with bpy (scripts/demo_scene.py in its own process); options as on its command line."""


@pytest.fixture
def tiny_scene(tmp_path: Path) -> Path:
    """6 frames, 64x36, Workbench: renders in well under a second a frame."""
    return make_scene(tmp_path / "tiny.blend", "--frame-end", "6", "--resolution", "64", "36", "--engine", "workbench")


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloudProcess]:
    """One embedded local cloud for the whole session (2 workers), as `make demo` runs it."""
    cloud = start_local_cloud(tmp_path_factory.mktemp("localcloud"), workers=2)
    yield cloud
    cloud.stop()


def run_cli(cloud: LocalCloudProcess, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Runs the real ``render-on-aws`` command line against the local cloud."""
    return subprocess.run(
        cloud.cli_command(*args), capture_output=True, text=True, timeout=timeout, env=cloud.client_environment()
    )
