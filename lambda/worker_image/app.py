"""The stack's worker image, built during the deploy (template.yaml: WorkerImage, a custom resource).

Why: the job definitions run ``<repository>:<WorkerImageTag>``; before it exists every job fails to pull its
image and is retried. The custom resource makes the image part of the stack: on create (and on an update that
changes the build context) this function uploads the build context it carries (``worker-context.zip``, written
by scripts/worker_context.py at ``sam build``) to ``s3://<bucket>/build/worker-context.zip``, starts the stack's
CodeBuild project and answers CloudFormation only when the image is in the repository. The job definitions (and
with them the state machine) depend on the resource, so a deploy that finishes has an image, and the first job
after a plain ``sam deploy`` runs.

Content-addressed: the image is also tagged ``src-<sha256 of the context zip>[:12]``. When that tag is already
in the repository (an update that did not touch container/ or contract/, a stack re-created over a kept
repository...), no build runs: the run tag (``WorkerImageTag``) is pointed at that image and the deploy goes on.

A build takes 10-15 minutes and a Lambda at most 15: the function polls until little of its time is left, then
invokes itself again (asynchronously) with the build id, until the build ends. A failed build answers FAILED with
the build's id, phase and log stream (``WorkerImageBuildFailed``), so CloudFormation rolls back with a reason.
Deleting the stack deletes nothing here (the repository empties itself: EmptyOnDelete).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from render_contract.errors import WorkerImageBuildFailed

LOG = logging.getLogger("worker-image")
LOG.setLevel(logging.INFO)
CONTEXT_ZIP = Path(__file__).resolve().parent / "worker-context.zip"
CONTEXT_KEY = "build/worker-context.zip"
POLL_SECONDS = 20.0
RESERVE_MS = 60_000
"""Time kept back from the Lambda's limit to hand over to the next invocation and answer CloudFormation."""
MAX_HOPS = 8
"""Invocations per build: 8 x ~14 minutes is past CodeBuild's 60-minute project timeout."""


def handler(event: dict[str, Any], context: Any) -> None:
    """CloudFormation custom-resource entry point (and the entry point of its own follow-up invocations)."""
    LOG.info("request %s %s hop %s", event.get("RequestType"), event.get("LogicalResourceId"), event.get("Hop", 0))
    try:
        outcome = handle(event, context.get_remaining_time_in_millis, context.invoked_function_arn)
    except WorkerImageBuildFailed as error:
        respond(event, "FAILED", f"{error.name}: {error}", {})
        return
    except Exception as error:  # any bug must still answer CloudFormation, or the deploy hangs for an hour
        LOG.exception("worker image resource failed")
        respond(event, "FAILED", f"{WorkerImageBuildFailed.__name__}: {type(error).__name__}: {error}", {})
        return
    if outcome is not None:
        respond(event, "SUCCESS", "", outcome)


def handle(event: dict[str, Any], remaining_ms: Callable[[], int], own_arn: str) -> dict[str, str] | None:
    """The image's data for CloudFormation, or None when a follow-up invocation will answer."""
    if event["RequestType"] == "Delete":
        return {}
    props = event["ResourceProperties"]
    repository, tag, project = props["Repository"], props["ImageTag"], props["Project"]
    ecr = boto3.client("ecr")
    build_id = event.get("BuildId")
    if build_id is None:
        digest = context_digest()
        source_tag = f"src-{digest[:12]}"
        if image_exists(ecr, repository, source_tag):
            LOG.info("image %s:%s exists: no build", repository, source_tag)
            point_tag(ecr, repository, source_tag, tag)
            return image_data(ecr, props, tag, build_id="")
        boto3.client("s3").upload_file(str(CONTEXT_ZIP), props["Bucket"], CONTEXT_KEY)
        build = boto3.client("codebuild").start_build(
            projectName=project,
            environmentVariablesOverride=[{"name": "SOURCE_TAG", "value": source_tag, "type": "PLAINTEXT"}],
        )["build"]
        build_id = build["id"]
        event = {**event, "BuildId": build_id, "SourceTag": source_tag, "Hop": 0}
        LOG.info("started build %s for %s:%s", build_id, repository, source_tag)
    status = wait_for_build(build_id, remaining_ms)
    if status is None:
        hop = int(event.get("Hop", 0)) + 1
        if hop >= MAX_HOPS:
            raise WorkerImageBuildFailed(f"build {build_id} still running after {hop} invocations")
        boto3.client("lambda").invoke(
            FunctionName=own_arn, InvocationType="Event", Payload=json.dumps({**event, "Hop": hop}).encode()
        )
        LOG.info("build %s still running: handed over to invocation %d", build_id, hop)
        return None
    if status["buildStatus"] != "SUCCEEDED":
        raise WorkerImageBuildFailed(describe_failure(status))
    if not image_exists(ecr, repository, tag):
        raise WorkerImageBuildFailed(f"build {build_id} succeeded but {repository}:{tag} is not in the repository")
    return image_data(ecr, props, tag, build_id)


def context_digest() -> str:
    return hashlib.sha256(CONTEXT_ZIP.read_bytes()).hexdigest()


def wait_for_build(build_id: str, remaining_ms: Callable[[], int]) -> dict[str, Any] | None:
    """The finished build, or None when this invocation's time runs out first."""
    codebuild = boto3.client("codebuild")
    while True:
        build = codebuild.batch_get_builds(ids=[build_id])["builds"][0]
        if build["buildStatus"] != "IN_PROGRESS":
            return dict(build)
        if remaining_ms() < RESERVE_MS + POLL_SECONDS * 1000:
            return None
        time.sleep(POLL_SECONDS)


def describe_failure(build: dict[str, Any]) -> str:
    failed = [phase for phase in build.get("phases", []) if phase.get("phaseStatus") not in (None, "SUCCEEDED")]
    where = f" in phase {failed[0]['phaseType']}" if failed else ""
    contexts = [c.get("message", "") for phase in failed for c in phase.get("contexts", []) if c.get("message")]
    logs = build.get("logs", {})
    log_place = f"; log: {logs.get('groupName')} {logs.get('streamName')}" if logs.get("groupName") else ""
    detail = f": {contexts[0]}" if contexts else ""
    return f"worker image build {build['id']} {build['buildStatus']}{where}{detail}{log_place}"


def image_exists(ecr: Any, repository: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ecr.exceptions.ImageNotFoundException:
        return False
    return True


def point_tag(ecr: Any, repository: str, source_tag: str, tag: str) -> None:
    """Give the image tagged ``source_tag`` the run tag too (ECR: PutImage of the same manifest)."""
    image = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": source_tag}])["images"][0]
    with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):  # the run tag names this image already
        ecr.put_image(repositoryName=repository, imageManifest=image["imageManifest"], imageTag=tag)


def image_data(ecr: Any, props: dict[str, Any], tag: str, build_id: str) -> dict[str, str]:
    repository = props["Repository"]
    detail = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"][0]
    digest = detail["imageDigest"]
    return {"ImageUri": f"{props['RepositoryUri']}:{tag}", "ImageDigest": digest, "BuildId": build_id}


def respond(event: dict[str, Any], status: str, reason: str, data: dict[str, str]) -> None:
    """PUT the custom resource's answer to CloudFormation's pre-signed URL."""
    physical = event.get("PhysicalResourceId") or f"{event['ResourceProperties'].get('Repository', 'worker')}-image"
    body = json.dumps(
        {
            "Status": status,
            "Reason": (reason or "see the function's log")[:3000],
            "PhysicalResourceId": physical,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data,
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        LOG.info("answered %s: HTTP %s", status, answer.status)
