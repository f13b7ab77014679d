"""The extension zip: what Blender's installer reads (manifest, wheels) matches what the project pins."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import build_addon
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def built_zip() -> Path:
    subprocess.run([sys.executable, str(ROOT / "build_addon.py")], check=True, capture_output=True, cwd=ROOT)
    return ROOT / "dist" / f"render_on_aws-{build_addon.addon_version()}.zip"


def test_manifest_is_a_blender_extension_manifest() -> None:
    manifest = tomllib.loads((ROOT / "addon" / "blender_manifest.toml").read_text())
    assert manifest["schema_version"] == "1.0.0" and manifest["id"] == "render_on_aws"
    assert manifest["version"] == build_addon.addon_version() == "0.1.0"
    assert manifest["type"] == "add-on" and manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert set(manifest["permissions"]) == {"network", "files"}
    assert all(reason and not reason.endswith(".") for reason in manifest["permissions"].values())


def test_zip_holds_the_addon_and_exactly_the_manifest_wheels(built_zip: Path) -> None:
    with zipfile.ZipFile(built_zip) as archive:
        names = archive.namelist()
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
    assert "__init__.py" in names and "core/starting.py" in names and "panels.py" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc") or "tests/" in name]
    wheels = sorted(name for name in names if name.startswith("wheels/"))
    assert sorted(path.removeprefix("./") for path in manifest["wheels"]) == wheels


def test_wheels_are_the_pinned_versions(built_zip: Path) -> None:
    pins = build_addon.read_pins()
    with zipfile.ZipFile(built_zip) as archive:
        wheels = [Path(name).name for name in archive.namelist() if name.startswith("wheels/")]
    for package in (*build_addon.PURE_PACKAGES, *build_addon.BINARY_PACKAGES):
        pin = pins[build_addon.normalise(package)]
        assert any(wheel.lower().startswith(pin.wheel_prefix) for wheel in wheels), (package, pin, wheels)
    zstandard = [wheel for wheel in wheels if wheel.startswith("zstandard-")]
    assert len(zstandard) == len(build_addon.PLATFORMS) and all("-cp311-cp311-" in w for w in zstandard)
    assert any("manylinux" in wheel and wheel.endswith("x86_64.whl") for wheel in zstandard)


def test_blender_uses_python_3_11() -> None:
    """The platform wheels are cp311: true of bpy 5.0 here (and of Blender 4.2 to 5.0)."""
    probe = "import bpy, sys; print(bpy.app.version[0], sys.version_info[:2] == (3, 11))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "True", out


def test_manifest_wheels_block_is_rewritten_in_place() -> None:
    text = 'id = "x"\nwheels = [\n  "./wheels/old.whl",\n]\n\n[permissions]\nfiles = "f"\n'
    updated = build_addon.manifest_with_wheels(text, ["a-1-py3-none-any.whl"])
    assert tomllib.loads(updated)["wheels"] == ["./wheels/a-1-py3-none-any.whl"]
    assert tomllib.loads(updated)["permissions"] == {"files": "f"}
