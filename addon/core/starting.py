"""Starting and stopping a job: upload what the bucket lacks, write the manifest, start the execution.

A job is a Step Functions execution whose name is the job id (:mod:`render_contract.ids`), so
``jobs/<jobId>/`` never collides and the execution ARN follows from the state machine's.
"""

from __future__ import annotations

import json
import threading

import botocore.exceptions
from render_contract import ids
from render_contract.errors import CancelFailed, ConnectionFailed, InvalidInput, JobCancelled
from render_contract.layout import manifest_key

from . import cas
from .connection import Connection
from .jobref import JobRef
from .preparing import PreparedJob, SubmitRequest, prepare


def submit_prepared(
    connection: Connection,
    prepared: PreparedJob,
    progress: cas.Progress | None = None,
    cancel: threading.Event | None = None,
) -> JobRef:
    """Uploads what the bucket lacks, writes the manifest, starts the execution (named after the job id)."""
    outputs = connection.outputs
    s3 = connection.client("s3")
    job_id = ids.new_job_id(prepared.job_name, artist=connection.settings.artist)
    manifest = prepared.manifest()
    execution_input = prepared.request.execution_input(job_id, outputs.bucket, prepared.job_name)
    try:
        cas.upload(s3, outputs.bucket, list(prepared.files.values()), progress=progress, cancel=cancel)
        s3.put_object(
            Bucket=outputs.bucket, Key=manifest_key(job_id), Body=manifest.to_json(), ContentType="application/json"
        )
        if cancel is not None and cancel.is_set():
            raise JobCancelled("cancelled before the job started")
        execution = connection.client("stepfunctions").start_execution(
            stateMachineArn=outputs.state_machine_arn, name=job_id, input=json.dumps(execution_input.to_dict())
        )
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError) as error:
        raise ConnectionFailed(f"lost the connection while submitting: {error}") from error
    except botocore.exceptions.NoCredentialsError as error:
        raise ConnectionFailed("no AWS credentials: log in (aws sso login) or choose a profile") from error
    except botocore.exceptions.ClientError as error:
        detail = error.response.get("Error", {})
        raise ConnectionFailed(
            f"AWS refused the submission ({detail.get('Code', 'error')}): {detail.get('Message', error)}"
        ) from error
    except botocore.exceptions.BotoCoreError as error:
        raise ConnectionFailed(f"submitting failed: {error}") from error
    return JobRef(job_id, execution["executionArn"], outputs.bucket)


def submit(
    connection: Connection,
    request: SubmitRequest,
    progress: cas.Progress | None = None,
    cancel: threading.Event | None = None,
) -> JobRef:
    """:func:`prepare` then :func:`submit_prepared` (missing files are the caller's to report beforehand)."""
    prepared = prepare(request)
    try:
        return submit_prepared(connection, prepared, progress, cancel)
    finally:
        prepared.cleanup()


def stop(connection: Connection, job: JobRef, reason: str = "cancelled by the artist") -> None:
    """StopExecution; the state machine's Batch tasks are terminated with it."""
    try:
        connection.client("stepfunctions").stop_execution(
            executionArn=job.execution_arn, error=JobCancelled.__name__, cause=reason
        )
    except botocore.exceptions.ClientError as error:
        raise CancelFailed(f"cannot cancel {job.job_id}: {error}") from error


def resume(connection: Connection, job_id: str) -> JobRef:
    """Runs a failed, cancelled or stopped job again: a new execution ``<jobId>--r<N>`` with the first run's input.

    Nothing is uploaded (the manifest and its files are in the bucket), the job is not planned again (the frame
    counter keeps its plan), and the workers skip every frame already whole in S3: only the missing frames are
    rendered, then the video is made.
    """
    latest, described = JobRef.latest(connection, job_id)
    if described is None:
        raise InvalidInput(f"job {job_id} never started: there is nothing to resume")
    if described["status"] == "RUNNING":
        raise InvalidInput(f"job {job_id} is still running: cancel it first, or wait for it")
    if described["status"] == "SUCCEEDED":
        raise InvalidInput(f"job {job_id} is done: there is nothing to resume")
    sfn = connection.client("stepfunctions")
    if latest.run > 1:  # a resume reuses the first run's input, whichever run ended last
        described = sfn.describe_execution(executionArn=JobRef.from_id(connection, job_id).execution_arn)
    name = ids.execution_name(job_id, latest.run + 1)
    try:
        execution = sfn.start_execution(
            stateMachineArn=connection.outputs.state_machine_arn, name=name, input=described.get("input") or "{}"
        )
    except botocore.exceptions.ClientError as error:
        detail = error.response.get("Error", {})
        raise ConnectionFailed(
            f"AWS refused the resume ({detail.get('Code', 'error')}): {detail.get('Message')}"
        ) from error
    return JobRef(job_id, execution["executionArn"], connection.outputs.bucket)
