"""The few places where moto 5.2.5 must behave like AWS for the real code to run.

- Step Functions' ``batch:submitJob.sync`` passes ASL's PascalCase parameters to botocore unconverted:
  convert them with Batch's own service model.
- The simple Batch backend marks jobs SUCCEEDED without running them: hand each job to the local executor.
  (Only ``submit_job`` can be replaced on ``BatchSimpleBackend``; ``terminate_job``/``cancel_job`` live on
  ``BatchBackend``, where its ``__getattribute__`` forwards them.)
- StopExecution does not terminate the Batch jobs of a running ``.sync`` task, as AWS does: remember which
  jobs each execution submitted and terminate them.
- The simple Lambda echoes its payload: run the real handler instead.
- StartExecution accepts any input size: refuse inputs over 262,144 bytes (UTF-8) as AWS does, so a client that
  puts too much in the execution input fails here as it would on AWS.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from moto import backends as moto_backends
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.batch.exceptions import ClientException
from moto.batch.models import BatchBackend, Job
from moto.batch_simple.models import BatchSimpleBackend
from moto.moto_api import state_manager
from moto.stepfunctions.exceptions import ValidationException
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_batch import (
    StateTaskServiceBatch,
)
from moto.stepfunctions.parser.models import StepFunctionsParserBackend
from render_contract.execution_input import MAX_INPUT_BYTES

from .batch import LocalBatchExecutor
from .shapes import input_shape, output_shape

_ORIGINAL_LIST_OF_MOTO_MODULES = moto_backends.list_of_moto_modules
LambdaInvoker = Callable[[Any, bytes], tuple[bytes, bool]]
"""(moto LambdaFunction, payload) -> (response payload, whether it is an error)."""


class _State:
    executor: LocalBatchExecutor | None = None
    invoke_lambda: LambdaInvoker | None = None
    jobs_by_execution: dict[str, list[str]] = defaultdict(list)
    stopped_executions: set[str] = set()
    lock = threading.Lock()


STATE = _State()


def install(executor: LocalBatchExecutor, invoke_lambda: LambdaInvoker) -> None:
    STATE.executor = executor
    STATE.invoke_lambda = invoke_lambda
    # Job statuses change only when the executor says so (moto would otherwise advance them on every read).
    state_manager.set_transition(model_name="batch::job", transition={"progression": "manual", "times": 10**9})
    # Patching moto's methods in place is this module's purpose: mypy rejects assigning to a method (method-assign),
    # and the Batch patches take the Batch subclass as self where moto's base method is typed for any service.
    StateTaskServiceBatch._normalise_parameters = _normalise_batch_parameters  # type: ignore[method-assign,assignment]
    StateTaskServiceBatch._normalise_response = _normalise_batch_response  # type: ignore[method-assign,assignment]
    StateTaskServiceBatch._eval_service_task = _eval_batch_task_remembering_jobs(  # type: ignore[method-assign]
        StateTaskServiceBatch._eval_service_task
    )
    BatchSimpleBackend.submit_job = _submit_job  # type: ignore[method-assign]
    BatchBackend.describe_jobs = _describe_jobs  # type: ignore[method-assign]
    BatchBackend.terminate_job = _terminate_job  # type: ignore[method-assign]
    BatchBackend.cancel_job = _terminate_job  # type: ignore[method-assign]
    # moto's server lists its own package folder (listdir + isdir of every module) on every request; the
    # list never changes, and that CPU is taken from the renders running beside it.
    moto_backends.list_of_moto_modules = _moto_modules
    StepFunctionsParserBackend.stop_execution = _stop_execution_terminating_jobs(  # type: ignore[method-assign]
        StepFunctionsParserBackend.stop_execution
    )
    StepFunctionsParserBackend.start_execution = _start_execution_checking_size(  # type: ignore[method-assign]
        StepFunctionsParserBackend.start_execution
    )
    LambdaSimpleBackend.invoke = _invoke_real_handler  # type: ignore[method-assign]


@functools.cache
def _moto_modules() -> tuple[str, ...]:
    return tuple(_ORIGINAL_LIST_OF_MOTO_MODULES())


def _normalise_batch_parameters(self: StateTaskServiceBatch, parameters: dict, *args: Any, **kwargs: Any) -> None:
    action = self.resource.api_action
    self._to_boto_request(parameters, input_shape("batch", action[0].upper() + action[1:]))


def _normalise_batch_response(
    self: StateTaskServiceBatch,
    response: Any,
    boto_service_name: str | None = None,
    service_action_name: str | None = None,
) -> None:
    """Batch results in Step Functions' casing (``JobId``), as AWS returns them and as moto's resolver reads them."""
    action = "".join(part.capitalize() for part in (service_action_name or "").split("_")) or (
        self.resource.api_action[0].upper() + self.resource.api_action[1:]
    )
    self._from_boto_response(response, output_shape("batch", action))


def _eval_batch_task_remembering_jobs(original: Callable[..., Any]) -> Callable[..., Any]:
    def eval_service_task(self: StateTaskServiceBatch, env: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, env, *args, **kwargs)
        execution_arn = env.states.context_object.context_object_data["Execution"]["Id"]
        submitted = env.stack[-1] if env.stack else {}
        job_id = submitted.get("JobId") or submitted.get("jobId")
        if job_id:
            with STATE.lock:
                stopped = execution_arn in STATE.stopped_executions
                if not stopped:
                    STATE.jobs_by_execution[execution_arn].append(job_id)
            if stopped:  # stopped while SubmitJob ran (a big array takes a while): the job was never remembered
                _terminate_jobs(execution_arn, [job_id])
        return result

    return eval_service_task


def _terminate_jobs(execution_arn: str, job_ids: list[str]) -> None:
    from moto.batch.models import batch_backends

    _, _, _, region, account, *_ = execution_arn.split(":")
    backend = batch_backends[account][region]
    for job_id in job_ids:
        backend.terminate_job(job_id, "Execution was stopped")


def _stop_execution_terminating_jobs(original: Callable[..., Any]) -> Callable[..., Any]:
    def stop_execution(self: StepFunctionsParserBackend, execution_arn: str, *args: Any, **kwargs: Any) -> Any:
        result = original(self, execution_arn, *args, **kwargs)
        with STATE.lock:
            STATE.stopped_executions.add(execution_arn)
            job_ids = STATE.jobs_by_execution.pop(execution_arn, [])
        _terminate_jobs(execution_arn, job_ids)
        return result

    return stop_execution


def _start_execution_checking_size(original: Callable[..., Any]) -> Callable[..., Any]:
    def start_execution(
        self: StepFunctionsParserBackend,
        state_machine_arn: str,
        name: Any = None,
        execution_input: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if execution_input is not None and len(str(execution_input).encode("utf-8")) > MAX_INPUT_BYTES:
            raise ValidationException(
                "1 validation error detected: Value at 'input' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_INPUT_BYTES}"
            )
        return original(self, state_machine_arn, name, execution_input, *args, **kwargs)

    return start_execution


def _submit_job(
    self: BatchSimpleBackend,
    job_name: str,
    job_def_id: str,
    job_queue: str,
    array_properties: dict[str, Any],
    depends_on: list[dict[str, str]] | None = None,
    container_overrides: dict[str, Any] | None = None,
    eks_properties_override: dict[str, Any] | None = None,
    timeout: dict[str, int] | None = None,
    parameters: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> tuple[str, str, str]:
    backend = self.backend
    job_def = backend.get_job_definition(job_def_id)
    if job_def is None:
        raise ClientException(f"Job definition {job_def_id} does not exist")
    queue = backend.get_job_queue(job_queue)
    if queue is None:
        raise ClientException(f"Job queue {job_queue} does not exist")
    size = (array_properties or {}).get("size")
    if size is not None and not 2 <= int(size) <= 10_000:
        raise ClientException("Array size must be between 2 and 10,000")  # as AWS; moto accepts 1

    def new_job(array: dict[str, Any], job_id: str | None = None) -> Job:
        job = Job(
            job_name,
            job_def,
            queue,
            backend,
            log_backend=backend.logs_backend,
            container_overrides=container_overrides,
            eks_properties_override=eks_properties_override,
            depends_on=depends_on,
            all_jobs=backend._jobs,
            timeout=timeout,
            array_properties=array,
            provided_job_id=job_id,
            parameters=parameters,
            tags=tags if job_id is None else None,
        )
        backend._jobs[job.job_id] = job
        return job

    job = new_job(dict(array_properties or {}))
    children = None
    if size is not None:
        children = [new_job({"statusSummary": {}, "index": i}, f"{job.job_id}:{i}") for i in range(int(size))]
        job._child_jobs = children
    assert STATE.executor is not None
    STATE.executor.submit(job, children)
    return job_name, job.job_id, job.arn


def _describe_jobs(self: BatchBackend, jobs: list[str] | None) -> list[dict[str, Any]]:
    """DescribeJobs by id lookup on a snapshot (moto iterates every job while a large array may still be added)."""
    known = dict(self._jobs)
    if not jobs:
        return [job.describe() for job in known.values()]
    by_arn = {job.arn: job for job in known.values()}
    found = [known.get(wanted) or by_arn.get(wanted) for wanted in jobs]
    return [job.describe() for job in found if job is not None]


def _terminate_job(self: BatchBackend, job_id: str, reason: str) -> None:
    if not job_id or not reason:
        raise ClientException("'jobId' and 'reason' are required fields (cannot be empty strings)")
    job = self.get_job_by_id(job_id)
    if job is not None and STATE.executor is not None:
        STATE.executor.terminate(job, reason)


def _invoke_real_handler(
    self: LambdaSimpleBackend, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
) -> bytes:
    function = self.get_function(function_name, qualifier)
    assert STATE.invoke_lambda is not None
    payload, is_error = STATE.invoke_lambda(function, body if isinstance(body, bytes) else str(body or "").encode())
    if is_error:
        response_headers["x-amz-function-error"] = "Unhandled"
    return payload
