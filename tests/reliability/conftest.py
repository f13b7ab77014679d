"""The drills' own local cloud: 4 workers (so half of the render children can be killed at once), started with
canary credentials in its environment so the security drill can prove it writes none of them down."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from localcloud.process import LocalCloudProcess
from localcloud.process import start as start_local_cloud

from .support import CANARY_KEY_ID, CANARY_SECRET

DRILL_WORKERS = 4


@pytest.fixture(scope="package")
def drill_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloudProcess]:
    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = CANARY_KEY_ID, CANARY_SECRET
    try:
        cloud = start_local_cloud(tmp_path_factory.mktemp("drillcloud"), workers=DRILL_WORKERS)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    yield cloud
    cloud.stop()
