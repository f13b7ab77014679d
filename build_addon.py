"""Builds ``dist/render_on_aws-<version>.zip``: the Blender extension with the wheels it needs.

Blender 4.2+ installs an extension's ``wheels`` itself (into its own site-packages), so the add-on never
downloads anything at run time. The wheel versions are the pins of ``requirements.txt`` (what the tests ran
with), fetched once with ``pip download`` into ``build/wheels/`` and reused offline afterwards.

Which wheels, and why:

* boto3, botocore, s3transfer, jmespath, python-dateutil, six, urllib3: the AWS client (pure Python).
* blender-asset-tracer: packing the scene's dependencies (pure Python). Its ``requests`` need is for Shaman
  uploads only, which the add-on does not use (and Blender bundles ``requests`` anyway).
* render_contract: the contract the add-on shares with the Lambda and the worker (contract/, stdlib only), built
  fresh from the working tree into a pure wheel with ``pip wheel`` on every build (its version rarely changes, its
  code does, so a cached wheel would go stale).
* zstandard: BAT reads zstd-compressed .blend files (Blender 3.0+ "Compress") with it. It is a C extension, so
  one wheel per platform, for CPython 3.11 (Blender 4.2 to 5.0 all ship Python 3.11): Linux x86_64 and aarch64
  (manylinux2014), macOS x86_64 and arm64, Windows x86_64. Blender installs only the wheel that fits the
  machine.

``addon/blender_manifest.toml``'s ``wheels`` list is rewritten to name exactly the wheels in the zip.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "addon"
MANIFEST = ADDON / "blender_manifest.toml"
CACHE = ROOT / "build" / "wheels"
CONTRACT = ROOT / "contract"
CONTRACT_WHEELS = ROOT / "build" / "contract-wheel"
DIST = ROOT / "dist"
PYTHON_VERSION = "3.11"
PURE_PACKAGES = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
    "blender-asset-tracer",
)
BINARY_PACKAGES = ("zstandard",)
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux2014_aarch64",
    "macosx_10_9_x86_64",
    "macosx_11_0_arm64",
    "win_amd64",
)
"""Platform tags pip asks for (manylinux2014 == manylinux_2_17); the wheel names may carry several tags."""
EXCLUDED_PARTS = {"__pycache__", "tests", ".pytest_cache", ".ruff_cache", "wheels"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo"}


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def wheel_prefix(self) -> str:
        """How a wheel file of this pin begins (names normalised as in wheel file names)."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"


def read_pins(requirements: Path = ROOT / "requirements.txt") -> dict[str, Pin]:
    """``name==version`` lines of requirements.txt, keyed by the normalised name."""
    pins: dict[str, Pin] = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, version = (part.strip() for part in line.split("==", 1))
        name = name.split("[", 1)[0]
        pins[normalise(name)] = Pin(name, version)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def addon_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _cached(pin: Pin) -> list[Path]:
    return sorted(path for path in CACHE.glob("*.whl") if path.name.lower().startswith(pin.wheel_prefix))


def _download(pin: Pin, platform: str | None) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--quiet",
        "--only-binary=:all:",
        "--no-deps",
        "--python-version",
        PYTHON_VERSION,
        "--dest",
        str(CACHE),
    ]
    if platform:
        command += ["--implementation", "cp", "--abi", "cp311", "--platform", platform]
    subprocess.run([*command, f"{pin.name}=={pin.version}"], check=True)


def _platform_wheel(wheels: list[Path], platform: str) -> Path | None:
    """The CPython 3.11 wheel of one platform tag (pip keeps the tag in the file name)."""
    for wheel in wheels:
        tags = wheel.stem.split("-")
        if tags[-3] == "cp311" and platform in tags[-1].split("."):
            return wheel
    return None


def collect_wheels(pins: dict[str, Pin] | None = None) -> list[Path]:
    """The wheels to ship, downloaded into ``build/wheels`` the first time (offline afterwards)."""
    pins = pins or read_pins()
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    for package in PURE_PACKAGES:
        pin = pins[normalise(package)]
        found = [path for path in _cached(pin) if path.name.endswith("-none-any.whl")]
        if not found:
            _download(pin, None)
            found = [path for path in _cached(pin) if path.name.endswith("-none-any.whl")]
        if len(found) != 1:
            raise SystemExit(f"expected one universal wheel of {pin.name}=={pin.version}, found {found}")
        wheels += found
    for package in BINARY_PACKAGES:
        pin = pins[normalise(package)]
        for platform in PLATFORMS:
            wheel = _platform_wheel(_cached(pin), platform)
            if wheel is None:
                _download(pin, platform)
                wheel = _platform_wheel(_cached(pin), platform)
            if wheel is None:
                raise SystemExit(f"no {pin.name}=={pin.version} wheel for {platform}")
            wheels.append(wheel)
    return sorted(set(wheels), key=lambda path: path.name)


def contract_wheel() -> Path:
    """A pure wheel of contract/ as it is now; kept apart from the download cache, which is keyed on pins."""
    CONTRACT_WHEELS.mkdir(parents=True, exist_ok=True)
    for old in CONTRACT_WHEELS.glob("*.whl"):
        old.unlink()
    command = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--quiet", "--no-deps"]
    subprocess.run([*command, "--wheel-dir", str(CONTRACT_WHEELS), str(CONTRACT)], check=True)
    # setuptools leaves its build/ and egg-info beside the sources; they are not the contract's files.
    for leftover in (CONTRACT / "build", *CONTRACT.glob("*.egg-info")):
        if leftover.is_dir():
            shutil.rmtree(leftover)
    found = sorted(CONTRACT_WHEELS.glob("render_contract-*-py3-none-any.whl"))
    if len(found) != 1:
        raise SystemExit(f"expected one pure wheel of contract/, found {found}")
    return found[0]


def manifest_with_wheels(text: str, wheels: list[str]) -> str:
    """The manifest text with its ``wheels = [...]`` list replaced (or added at the end)."""
    block = "wheels = [\n" + "".join(f'  "./wheels/{name}",\n' for name in wheels) + "]"
    pattern = re.compile(r"^wheels\s*=\s*\[.*?\]", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(block, text, count=1)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def addon_files() -> list[Path]:
    """Every file of the extension: the addon folder without caches, tests and build leftovers."""
    return sorted(
        path
        for path in ADDON.rglob("*")
        if path.is_file()
        and not EXCLUDED_PARTS.intersection(path.relative_to(ADDON).parts)
        and path.suffix not in EXCLUDED_SUFFIXES
    )


def build(output: Path | None = None) -> Path:
    wheels = sorted([*collect_wheels(), contract_wheel()], key=lambda path: path.name)
    manifest_text = MANIFEST.read_text()
    updated = manifest_with_wheels(manifest_text, [wheel.name for wheel in wheels])
    if updated != manifest_text:
        MANIFEST.write_text(updated)
        print(f"updated the wheels list of {MANIFEST.relative_to(ROOT)}", file=sys.stderr)
    manifest = tomllib.loads(updated)
    if manifest["version"] != addon_version():
        raise SystemExit(f"manifest version {manifest['version']} != pyproject's {addon_version()}")
    output = output or DIST / f"render_on_aws-{manifest['version']}.zip"
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in addon_files():
            archive.write(path, path.relative_to(ADDON).as_posix())
        for wheel in wheels:
            archive.write(wheel, f"wheels/{wheel.name}")
    partial.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, help="zip path (default: dist/render_on_aws-<version>.zip)")
    args = parser.parse_args(argv)
    print(build(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
