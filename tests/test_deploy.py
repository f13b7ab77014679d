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
    source_tag = f"src-{app.context_digest()[:12]}"
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
