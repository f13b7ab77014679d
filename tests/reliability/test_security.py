"""Security checks that tests/test_template.py does not already make (issue 9 item 6): after a real submit, no
credential is written anywhere we control: not in the job's S3 objects, not in the CLI's files (hash cache, any
dot-folder under its HOME), not in the submitted .blend (left byte-identical), and not by the local cloud (its
state directory: Batch and Lambda logs). Canary credentials are put in the environment of the CLI and of the
drill cloud itself, so a leak anywhere shows up as the canary string.

checkov, the no-``*``-action IAM check, resource scoping and the TLS-only bucket policy are tests/test_template.py's;
the add-on folder and its preferences after a submit from Blender are the add-on engineer's to check.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene

from .support import CANARY_KEY_ID, CANARY_SECRET, bucket_keys, read_object

CREDENTIAL = re.compile(rb"(AKIA|ASIA)[0-9A-Z]{16}|aws_secret_access_key\s*=|" + re.escape(CANARY_SECRET.encode()))


def _leaks(data: bytes) -> list[bytes]:
    return [match.group(0) for match in CREDENTIAL.finditer(data)] + (
        [CANARY_KEY_ID.encode()] if CANARY_KEY_ID.encode() in data else []
    )


def _files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


@pytest.mark.slow
def test_no_credential_is_written_anywhere_after_a_submit(drill_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    scene = make_scene(
        tmp_path / "scene" / "secret.blend", "--frame-end", "2", "--resolution", "64", "36", "--engine", "workbench"
    )
    original = scene.read_bytes()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **{
            k: v
            for k, v in drill_cloud.client_environment().items()
            if k not in ("XDG_CACHE_HOME", "RENDER_ON_AWS_CACHE_DIR")
        },
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": CANARY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": CANARY_SECRET,
        "AWS_SESSION_TOKEN": CANARY_SECRET + "-token",
    }
    before = bucket_keys(drill_cloud)
    result = subprocess.run(
        drill_cloud.cli_command("submit", str(scene), "--wait"), capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-800:]
    assert CANARY_SECRET not in result.stdout + result.stderr and CANARY_KEY_ID not in result.stdout + result.stderr

    new = sorted(bucket_keys(drill_cloud) - before)
    assert new, "the job wrote nothing?"
    leaks = {key: found for key in new if (found := _leaks(read_object(drill_cloud, key)))}
    assert not leaks, leaks

    assert scene.read_bytes() == original, "the artist's .blend must not be modified"
    written = _files(home) + _files(scene.parent)
    # (The hash cache lands under HOME too, except for files written in the last 2 s, which it does not cache.)
    leaks = {str(path): found for path in written if (found := _leaks(path.read_bytes()))}
    assert not leaks, leaks

    state = _files(drill_cloud.state_dir)
    assert any(path.suffix == ".log" for path in state)
    leaks = {str(path): found for path in state if (found := _leaks(path.read_bytes()))}
    assert not leaks, leaks
    print(f"\nno credential in {len(new)} S3 objects, {len(written)} client files, {len(state)} local-cloud files")
