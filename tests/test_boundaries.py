"""The package boundaries, checked in clean processes: who may import what.

* The contract (``render_contract``) is stdlib only: the Lambda, the worker and Blender all import it, so an
  import of boto3 (or anything else) there would break one of them.
* The add-on's core (``render_on_aws.core``) imports without Blender: the command line and the tests run it.
* The frame counter's deployment package (what ``sam build`` makes with lambda/frame_counter/Makefile and
  contract/Makefile) imports with only its own requirements, the layer and the boto3 the Lambda runtime brings:
  no add-on (the old ``render_on_aws`` symlink), no bpy, no venv. Under python3.12 (the runtime's) when one is
  installed, the built package also handles a real invocation against the moto server.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml

from tests.conftest import BLENDFILES, ROOT

CONTRACT = ROOT / "contract"
FUNCTION = ROOT / "lambda" / "frame_counter"
BUILD = ROOT / "build" / "lambda"
# What the Lambda python runtime provides besides the standard library (boto3 and its dependencies).
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")

BLOCKER = r"""
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    '''Refuses the top-level modules the code under test must not import, as if they were not installed.'''
    def __init__(self, allowed, blocked):
        self.allowed, self.blocked = allowed, blocked
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in self.blocked or (self.allowed is not None and top not in self.allowed):
            raise ImportError(f"{name} is blocked in this process", name=name)
        return None

def check(modules, allowed, blocked):
    sys.meta_path.insert(0, Blocked(allowed, blocked))
    failures = {}
    for module in modules:
        try:
            __import__(module)
        except Exception as error:
            failures[module] = f"{type(error).__name__}: {error}"
    loaded = sorted({name.partition(".")[0] for name in sys.modules})
    print("RESULT " + __import__("json").dumps({"failures": failures, "loaded": loaded}))
"""


def modules_of(package: str, folder: Path) -> list[str]:
    """The package and every module in its folder (not recursive: both packages are flat)."""
    return [package, *sorted(f"{package}.{path.stem}" for path in folder.glob("*.py") if path.stem != "__init__")]


def import_blocked(modules: list[str], allowed: set[str] | None, blocked: set[str]) -> dict[str, Any]:
    """Imports ``modules`` in a fresh interpreter where the blocked top-level names raise ImportError."""
    arguments = json.dumps([modules, sorted(allowed) if allowed is not None else None, sorted(blocked)])
    script = BLOCKER + "\nmodules, allowed, blocked = __import__('json').loads(sys.argv[1])\n"
    script += "check(modules, None if allowed is None else set(allowed), set(blocked))\n"
    result = subprocess.run(
        [sys.executable, "-c", script, arguments], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    return json.loads(lines[-1][len("RESULT ") :])


# ---- (a) the contract and the add-on core without Blender ---------------------------------------------------
def test_contract_imports_with_the_standard_library_only() -> None:
    modules = modules_of("render_contract", CONTRACT / "render_contract")
    assert len(modules) > 5
    allowed = set(sys.stdlib_module_names) | {"render_contract"}
    report = import_blocked(modules, allowed, {"bpy", "boto3", "botocore"})
    assert report["failures"] == {}
    assert not {"bpy", "boto3", "botocore", "render_on_aws"} & set(report["loaded"])


def test_addon_core_imports_without_bpy() -> None:
    modules = modules_of("render_on_aws.core", ROOT / "addon" / "core")
    assert {"render_on_aws.core.cli", "render_on_aws.core.cas", "render_on_aws.core.tasks"} <= set(modules)
    report = import_blocked(modules, None, {"bpy", "bmesh", "mathutils", "gpu", "bl_ui", "addon_utils"})
    assert report["failures"] == {}
    assert "bpy" not in report["loaded"]


# ---- (b) the Lambda package as sam build makes it -------------------------------------------------------------
def test_makefile_platform_matches_the_template() -> None:
    """The function's Makefile installs wheels for the runtime and architecture template.yaml deploys."""
    template = json.loads(json.dumps(cfn_yaml.load(str(ROOT / "template.yaml"))))
    function = template["Globals"]["Function"]
    makefile = (FUNCTION / "Makefile").read_text()
    version = re.search(r"^PYTHON_VERSION \?= (\S+)$", makefile, re.MULTILINE)
    platform = re.search(r"^LAMBDA_PLATFORM \?= (\S+)$", makefile, re.MULTILINE)
    assert version and function["Runtime"] == f"python{version.group(1)}"
    arch = {"x86_64": "x86_64", "arm64": "aarch64"}[function["Architectures"][0]]
    assert platform and platform.group(1) == f"manylinux2014_{arch}"
    assert "build-FrameCounterFunction:" in makefile
    assert "build-ContractLayer:" in (CONTRACT / "Makefile").read_text()


def build_package(python_version: str) -> tuple[Path, Path]:
    """(function dir, layer dir) built by the two makefile targets; cached under build/lambda on their inputs."""
    inputs = [FUNCTION / "Makefile", FUNCTION / "requirements.txt", FUNCTION / "app.py", FUNCTION / "blend_facts.py"]
    inputs += [CONTRACT / "Makefile", *sorted((CONTRACT / "render_contract").glob("*"))]
    digest = hashlib.sha1()
    for path in inputs:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = BUILD / f"py{python_version}-{digest.hexdigest()[:12]}"
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            for old in BUILD.glob(f"py{python_version}-*"):
                shutil.rmtree(old)
            make = ["make", "--no-print-directory", "-C"]
            layer = subprocess.run(
                [*make, str(CONTRACT), "build-ContractLayer", f"ARTIFACTS_DIR={target / 'ContractLayer'}"],
                capture_output=True,
                text=True,
            )
            assert layer.returncode == 0, layer.stdout + layer.stderr
            function = subprocess.run(
                [
                    *make,
                    str(FUNCTION),
                    "build-FrameCounterFunction",
                    f"ARTIFACTS_DIR={target / 'FrameCounterFunction'}",
                    f"PYTHON_VERSION={python_version}",
                    f"PYTHON={sys.executable}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert function.returncode == 0, function.stdout + function.stderr
            (target / ".complete").touch()
    return target / "FrameCounterFunction", target / "ContractLayer" / "python"


def runtime_packages(folder: Path) -> Path:
    """A folder of links to the venv's boto3 family: what the Lambda runtime puts on sys.path, nothing more."""
    site = Path(sysconfig.get_paths()["purelib"])
    folder.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PACKAGES:
        source = site / name if (site / name).is_dir() else site / f"{name}.py"
        assert source.exists(), source
        link = folder / source.name
        if not link.exists():
            link.symlink_to(source)
    return folder


PROBE = r"""
import json, sys
sys.path[:] = [p for p in sys.argv[1:]] + [p for p in sys.path if p.startswith(sys.base_prefix)]
import app, blend_facts, render_contract
bad = sorted(name for name in sys.modules if name.partition(".")[0] in ("render_on_aws", "bpy", "moto", "pytest"))
print("RESULT " + json.dumps({"contract": render_contract.__file__, "app": app.__file__, "bad": bad,
                              "zstd": sys.modules["zstandard"].__file__, "version": list(sys.version_info[:2])}))
"""


def probe(python: str, paths: list[Path], script: str = PROBE, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs ``script`` with -I -S (no site-packages, no user site, no PYTHONPATH) and ``paths`` as sys.path."""
    result = subprocess.run(
        [python, "-B", "-I", "-S", "-c", script, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd="/",
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    return json.loads(lines[-1][len("RESULT ") :])


def assert_clean_package(function: Path, layer: Path) -> None:
    for folder in (function, layer):
        names = {path.name for path in folder.iterdir()}
        assert not {"render_on_aws", "bpy", "addon", "boto3", "botocore"} & names, (folder, names)
    assert {path.name for path in layer.iterdir()} == {"render_contract"}
    assert not list(function.rglob("__pycache__")), "the build Python's bytecode must not ship"


def test_lambda_package_imports_with_only_its_requirements(tmp_path: Path) -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # the host's: its zstandard wheel must load
    function, layer = build_package(version)
    assert_clean_package(function, layer)
    report = probe(sys.executable, [function, layer, runtime_packages(tmp_path / "runtime")])
    assert report["bad"] == []
    assert Path(report["contract"]).is_relative_to(layer)
    assert Path(report["app"]).is_relative_to(function) and Path(report["zstd"]).is_relative_to(function)


# ---- (c) the Lambda's Python ----------------------------------------------------------------------------------
def lambda_python() -> str | None:
    """A working python3.12 (the runtime template.yaml deploys): on PATH, or in pyenv's versions folder."""
    candidates = [shutil.which("python3.12") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    for candidate in filter(None, candidates):
        check = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True)
        if check.returncode == 0 and check.stdout.strip() == b"(3, 12)":
            return candidate
    return None


INVOKE = r"""
import json, sys
sys.path[:] = [p for p in sys.argv[1:]] + [p for p in sys.path if p.startswith(sys.base_prefix)]
import app
results = {}
for name, uri in json.loads(sys.stdin.readline()).items():
    try:
        results[name] = {"summary": app.handler({"input": {"inputUri": uri}, "jobId": "job-" + name}, None)}
    except Exception as error:
        results[name] = {"error": type(error).__name__, "message": str(error)}
print("RESULT " + json.dumps({"results": results, "version": list(sys.version_info[:2]), "app": app.__file__}))
"""


def test_lambda_package_handles_an_invocation_under_python_3_12(bucket: str, tmp_path: Path) -> None:
    python = lambda_python()
    if python is None:
        pytest.skip("no working python3.12 (the Lambda runtime) on PATH or under ~/.pyenv/versions")
    if not (BLENDFILES / "v293_raw_geometry_nodes.blend").exists():
        pytest.skip(f"shared .blend files missing ({BLENDFILES})")
    function, layer = build_package("3.12")  # exactly what sam build ships (cp312 manylinux2014_x86_64 wheels)
    assert_clean_package(function, layer)
    assert list((function / "zstandard").glob("*.cpython-312-x86_64-linux-gnu.so"))
    s3 = boto3.client("s3")
    uris = {}
    for name, blend in {"geometry": "v293_raw_geometry_nodes.blend", "zstd": "v301_zstd.blend"}.items():
        key = f"uploads/{uuid.uuid4().hex}/{blend}"
        s3.put_object(Bucket=bucket, Key=key, Body=(BLENDFILES / blend).read_bytes())
        uris[name] = f"s3://{bucket}/{key}"
    env = {
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
        "BUCKET_NAME": bucket,
        "JOB_QUEUE_ARN": "arn:aws:batch:us-east-1:123456789012:job-queue/render",
        "RENDER_JOB_DEFINITION_ARN": "arn:aws:batch:us-east-1:123456789012:job-definition/render:1",
        "STITCH_JOB_DEFINITION_ARN": "arn:aws:batch:us-east-1:123456789012:job-definition/stitch:1",
        "MAX_VCPUS": "64",
        "JOB_VCPUS": "1",
        "POWERTOOLS_SERVICE_NAME": "frame-counter",
        "TMPDIR": str(tmp_path),
    }
    result = subprocess.run(
        [
            python,
            "-B",
            "-I",
            "-S",
            "-c",
            INVOKE,
            str(function),
            str(layer),
            str(runtime_packages(tmp_path / "runtime")),
        ],
        input=json.dumps(uris) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/",
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    report = json.loads(lines[-1][len("RESULT ") :])
    assert report["version"] == [3, 12] and Path(report["app"]).is_relative_to(function)
    geometry = report["results"]["geometry"]
    assert geometry.get("summary", {}).get("frames") == {"start": 1, "end": 250, "step": 1, "count": 250}, geometry
    plan_key = geometry["summary"]["planUri"].split("/", 3)[3]
    assert s3.head_object(Bucket=bucket, Key=plan_key)["ContentLength"] > 0
    # A zstd-compressed file: the cp312 zstandard extension decompresses it, then the named refusal comes back.
    assert report["results"]["zstd"]["error"] == "NoCamera", report["results"]["zstd"]
