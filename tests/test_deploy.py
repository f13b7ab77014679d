"""Deploying (issue 18): the worker-image custom resource's handler on moto over HTTP, and the Makefile's deploy.

The handler is the package `sam build` makes (lambda/worker_image/Makefile: app.py and worker-context.zip),
loaded as the Lambda runtime loads it; S3, ECR and CodeBuild are a moto server; CloudFormation's pre-signed
response URL is a real HTTP server here that records what the handler PUTs. moto's CodeBuild runs no buildspec
(every build it reports has SUCCEEDED and pushed nothing), so a test that needs the image pushes it to moto's ECR
itself, as the build would.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import uuid
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from render_contract import errors

from tests.conftest import ROOT

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:" + "a" * 64,
        },
        "layers": [],
    }
)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The function's package, built by its Makefile as `sam build` (and `make sam-build`) does."""
    out = tmp_path_factory.mktemp("worker-image-package")
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            "lambda/worker_image",
            "build-WorkerImageFunction",
            f"ARTIFACTS_DIR={out}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def app(package: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("worker_image_app", package / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Answers(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def response_url() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """CloudFormation's side: where the custom resource answers (real HTTP), and the answers it got."""
    received: list[dict[str, Any]] = []
    handler = type("Recorder", (Answers,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/response?signed=1", received
    server.shutdown()


@pytest.fixture
def stack(bucket: str) -> dict[str, str]:
    """The stack's resources the custom resource works with, on moto."""
    suffix = uuid.uuid4().hex[:8]
    repository = boto3.client("ecr").create_repository(repositoryName=f"worker-{suffix}")["repository"]
    project = f"worker-image-{suffix}"
    boto3.client("codebuild").create_project(
        name=project,
        source={"type": "S3", "location": f"{bucket}/build/worker-context.zip"},
        artifacts={"type": "NO_ARTIFACTS"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_MEDIUM",
        },
        serviceRole="arn:aws:iam::123456789012:role/build",
    )
    return {
        "Bucket": bucket,
        "Repository": repository["repositoryName"],
        "RepositoryUri": repository["repositoryUri"],
        "Project": project,
        "ImageTag": "latest",
    }


class Context:
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:worker-image"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


def request(kind: str, props: dict[str, str], url: str, **extra: Any) -> dict[str, Any]:
    return {
        "RequestType": kind,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/render-on-aws/1",
        "RequestId": uuid.uuid4().hex,
        "LogicalResourceId": "WorkerImage",
        "ResourceType": "Custom::WorkerImage",
        "ResourceProperties": {"ServiceToken": Context.invoked_function_arn, **props},
        **extra,
    }


def builds(project: str) -> list[str]:
    return list(boto3.client("codebuild").list_builds_for_project(projectName=project)["ids"])


def test_package_carries_the_build_context_reproducibly(package: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(package / "worker-context.zip") as archive:
        names = archive.namelist()
    assert "container/Dockerfile" in names and "container/buildspec.yml" in names and "pyproject.toml" in names
    assert "contract/render_contract/errors.py" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    # Same files, same bytes: the content tag src-<hash> finds the image of an unchanged context.
    again = subprocess.run(
        [sys.executable, "scripts/worker_context.py", str(tmp_path / "again.zip")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert again == hashlib.sha256((package / "worker-context.zip").read_bytes()).hexdigest()


def test_create_builds_and_fails_the_deploy_when_no_image_arrives(
    app: ModuleType, stack: dict[str, str], response_url: Any
) -> None:
    url, answers = response_url
    app.handler(request("Create", stack, url), Context())
    assert len(answers) == 1
    answer = answers[0]
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"{errors.WorkerImageBuildFailed.__name__}: build ")
    assert f"{stack['Repository']}:latest is not in the repository" in answer["Reason"]
    assert len(builds(stack["Project"])) == 1
    uploaded = boto3.client("s3").get_object(Bucket=stack["Bucket"], Key="build/worker-context.zip")["Body"].read()
    assert uploaded == (app.CONTEXT_ZIP).read_bytes()


def test_create_answers_with_the_image_once_the_build_pushed_it(
    app: ModuleType, stack: dict[str, str], response_url: Any
) -> None:
    url, answers = response_url
    ecr = boto3.client("ecr")
    # What the build does (buildspec post_build: push latest and src-<hash>), done here for moto's CodeBuild.
    ecr.put_image(repositoryName=stack["Repository"], imageManifest=MANIFEST, imageTag="latest")
    event = request("Create", stack, url)
    assert app.handle(event, Context.get_remaining_time_in_millis, Context.invoked_function_arn)["ImageUri"] == (
        f"{stack['RepositoryUri']}:latest"
    )
    app.handler(event, Context())
    (answer,) = [a for a in answers]
    assert answer["Status"] == "SUCCESS", answer
    assert answer["Data"]["ImageUri"] == f"{stack['RepositoryUri']}:latest"
    assert answer["Data"]["ImageDigest"].startswith("sha256:")
    assert answer["PhysicalResourceId"] == f"{stack['Repository']}-image"


def test_an_unchanged_context_builds_nothing_and_tags_the_image(
    app: ModuleType, stack: dict[str, str], response_url: Any
) -> None:
    url, answers = response_url
    ecr = boto3.client("ecr")
    source_tag = f"src-{hashlib.sha256(app.CONTEXT_ZIP.read_bytes()).hexdigest()[:12]}"  # as `make worker-image` tags
    ecr.put_image(repositoryName=stack["Repository"], imageManifest=MANIFEST, imageTag=source_tag)
    app.handler(request("Update", {**stack, "ImageTag": "stable"}, url, PhysicalResourceId="kept-id"), Context())
    assert [a["Status"] for a in answers] == ["SUCCESS"]
    assert answers[0]["PhysicalResourceId"] == "kept-id", "an update must not replace the resource"
    assert builds(stack["Project"]) == []
    tagged = ecr.describe_images(repositoryName=stack["Repository"], imageIds=[{"imageTag": "stable"}])["imageDetails"]
    assert set(tagged[0]["imageTags"]) == {source_tag, "stable"}


def test_delete_leaves_the_repository_to_itself(app: ModuleType, stack: dict[str, str], response_url: Any) -> None:
    url, answers = response_url
    app.handler(request("Delete", stack, url, PhysicalResourceId="x"), Context())
    assert [a["Status"] for a in answers] == ["SUCCESS"]
    assert builds(stack["Project"]) == []


def test_bad_properties_fail_with_a_name_instead_of_hanging_the_deploy(
    app: ModuleType, stack: dict[str, str], response_url: Any
) -> None:
    url, answers = response_url
    app.handler(request("Create", {"Bucket": stack["Bucket"]}, url), Context())
    assert answers[0]["Status"] == "FAILED"
    assert answers[0]["Reason"].startswith("WorkerImageBuildFailed: KeyError")


def test_a_failed_build_names_its_phase_and_log(app: ModuleType) -> None:
    """The reason CloudFormation shows, from a BatchGetBuilds answer of a failed build (moto's builds all succeed)."""
    build = {
        "id": "worker-image:1234",
        "buildStatus": "FAILED",
        "phases": [
            {"phaseType": "PRE_BUILD", "phaseStatus": "SUCCEEDED"},
            {
                "phaseType": "BUILD",
                "phaseStatus": "FAILED",
                "contexts": [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": "exit status 1"}],
            },
        ],
        "logs": {"groupName": "render-on-aws-logs", "streamName": "worker-image/1234"},
    }
    assert app.describe_failure(build) == (
        "worker image build worker-image:1234 FAILED in phase BUILD: exit status 1;"
        " log: render-on-aws-logs worker-image/1234"
    )


# ---- the Makefile: make deploy, make worker-image ------------------------------------------------------------------
# Stand-ins for the two AWS command lines, on PATH: each records its arguments. `sam build` does what SAM does with
# this template (the makefile targets, via `make sam-build` without sam); `sam deploy --guided` saves the region
# the way SAM saves answers (into the config file's [default.deploy.parameters]). That tests the Makefile, not AWS.
FAKE_SAM = r"""#!/usr/bin/env bash
echo "sam $*" >> "$FAKE_LOG"
case "$1" in
  --version) echo "SAM CLI, version 1.130.0 (stand-in)" ;;
  build) exec make --no-print-directory -C "$FAKE_ROOT" sam-build SAM= ;;
  deploy)
    if [[ " $* " == *" --guided "* ]]; then
      config=$(echo "$*" | sed -n 's/.*--config-file \([^ ]*\).*/\1/p')
      sed -i 's/^\[default\.deploy\.parameters\]$/&\nregion = "eu-west-1"/' "$config"
    fi ;;
esac
"""
FAKE_AWS = r"""#!/usr/bin/env bash
echo "aws $*" >> "$FAKE_LOG"
case " $* " in
  *" configure get region "*) [ -n "$FAKE_CONFIG_REGION" ] && echo "$FAKE_CONFIG_REGION" || exit 1 ;;
  *" describe-stacks "*BucketName*) echo render-bucket ;;
  *" describe-stacks "*WorkerImageProjectName*) echo worker-image-project ;;
  *" start-build "*) echo "worker-image-project:1234" ;;
  *" batch-get-builds "*) echo SUCCEEDED ;;
esac
"""


@pytest.fixture
def tools(tmp_path: Path) -> dict[str, Any]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sam", FAKE_SAM), ("aws", FAKE_AWS)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    config = tmp_path / "samconfig.toml"
    config.write_text((ROOT / "samconfig.toml").read_text())
    log = tmp_path / "calls.log"
    env = {
        k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "MAKEFLAGS")
    }
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_LOG=str(log), FAKE_ROOT=str(ROOT))
    return {"config": config, "log": log, "env": env}


def make(tools: dict[str, Any], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args, f"SAMCONFIG={tools['config']}"],
        cwd=ROOT,
        env={**tools["env"], **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def calls(tools: dict[str, Any]) -> list[str]:
    return tools["log"].read_text().splitlines() if tools["log"].exists() else []


def test_first_deploy_is_guided_and_saves_the_region_then_plain(tools: dict[str, Any]) -> None:
    config = str(tools["config"])
    first = make(tools, "deploy")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"sam build --build-in-source --config-file {config}" in calls(tools)
    assert calls(tools)[-1] == f"sam deploy --guided --config-file {config}"
    assert 'region = "eu-west-1"' in tools["config"].read_text()
    # The build ran before the deploy: the packages sam deploy uploads, the build context included.
    assert "sam-build: the worker image function carries the build context" in first.stdout

    second = make(tools, "deploy")
    assert second.returncode == 0, second.stdout + second.stderr
    assert calls(tools)[-1] == f"sam deploy --config-file {config}"
    assert "deploy: sam deploy to eu-west-1" in second.stdout

    again = make(tools, "deploy", "GUIDED=1", "PROFILE=admin")
    assert calls(tools)[-1] == f"sam deploy --guided --config-file {config} --profile admin", again.stdout


def test_deploy_without_the_sam_cli_says_so(tools: dict[str, Any]) -> None:
    result = make(tools, "deploy", "SAM=")
    assert result.returncode != 0
    assert "deploy: the AWS SAM CLI is not installed" in result.stdout
    assert calls(tools) == []


def test_worker_image_finds_stack_and_region_in_samconfig(tools: dict[str, Any], tmp_path: Path) -> None:
    text = (
        tools["config"]
        .read_text()
        .replace("[default.deploy.parameters]", '[default.deploy.parameters]\nregion = "eu-west-1"')
    )
    tools["config"].write_text(text)
    result = make(tools, "worker-image", "POLL_SECONDS=0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker-image: stack render-on-aws in eu-west-1" in result.stdout
    recorded = calls(tools)
    assert all(call.startswith("aws --region eu-west-1 ") for call in recorded), recorded
    assert any("cloudformation describe-stacks --stack-name render-on-aws" in call for call in recorded)
    assert any("s3 cp dist/worker-context.zip s3://render-bucket/build/worker-context.zip" in call for call in recorded)
    # The content tag the deploy's WorkerImage resource looks for: the same context gives the same tag.
    digest = hashlib.sha256((ROOT / "dist" / "worker-context.zip").read_bytes()).hexdigest()
    start = [call for call in recorded if " start-build " in call]
    assert start and start[0].endswith(f"name=SOURCE_TAG,value=src-{digest[:12]} --query build.id --output text")


def test_worker_image_takes_the_region_from_the_aws_config(tools: dict[str, Any]) -> None:
    result = make(tools, "worker-image", "STACK=team-b", "POLL_SECONDS=0", FAKE_CONFIG_REGION="us-west-2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "worker-image: stack team-b in us-west-2" in result.stdout
    result = make(tools, "worker-image", "REGION=ap-south-1", "POLL_SECONDS=0", FAKE_CONFIG_REGION="us-west-2")
    assert "worker-image: stack render-on-aws in ap-south-1" in result.stdout


def test_worker_image_without_any_region_says_how_to_give_one(tools: dict[str, Any]) -> None:
    result = make(tools, "worker-image")
    assert result.returncode == 2
    assert "worker-image: no region: give REGION=<region>, deploy with make deploy" in result.stdout
    assert [call for call in calls(tools) if "configure get region" not in call] == []
