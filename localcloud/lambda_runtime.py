"""Runs the real Lambda handler, one invocation per process, with the function's own environment.

A process per call gives each invocation the function's environment variables without touching the local
cloud's ``os.environ`` (which Batch threads read while they start workers), and isolates the handler's imports
and memory the way a Lambda sandbox does. The handler's prints go to standard error (the "CloudWatch log");
standard output carries only the result.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LambdaContext:
    """The attributes of AWS's context object that handlers (and Powertools) read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    timeout_seconds: float
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def invoke(
    code_dir: Path, handler: str, payload: bytes, environment: Mapping[str, str], timeout: float, log_path: Path
) -> tuple[bytes, bool]:
    """Runs ``handler`` (``module.function``) from ``code_dir``; returns (response payload, is_error)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "localcloud.lambda_runtime", str(code_dir), handler, str(timeout)],
                input=payload,
                env=dict(environment),
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=timeout + 5,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _error("Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds"), True
    try:
        outcome = json.loads(completed.stdout)
    except ValueError:
        return _error("Runtime.ExitError", f"the handler's process exited with {completed.returncode}"), True
    if "error" in outcome:
        return json.dumps(outcome["error"]).encode(), True
    return json.dumps(outcome["result"]).encode(), False


def _error(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def main() -> None:
    code_dir, handler, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    event = json.loads(sys.stdin.buffer.read() or b"null")
    sys.path.insert(0, code_dir)
    module_name, function_name = handler.rsplit(".", 1)
    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")
    context = LambdaContext(
        function_name=name,
        memory_limit_in_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
        invoked_function_arn=os.environ.get("LOCALCLOUD_FUNCTION_ARN", name),
        timeout_seconds=timeout,
    )
    try:
        result = getattr(importlib.import_module(module_name), function_name)(event, context)
        outcome = {"result": result}
    except Exception as error:  # every handler error becomes the Lambda errorType, as on AWS
        outcome = {
            "error": {
                "errorType": type(error).__name__,
                "errorMessage": str(error),
                "stackTrace": traceback.format_tb(error.__traceback__),
            }
        }
        traceback.print_exc()
    result_stream.write(json.dumps(outcome))
    result_stream.flush()


if __name__ == "__main__":
    main()
