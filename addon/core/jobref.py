"""A submitted job's identity: its id, the execution ARN of its latest run and the bucket of its data.

A job's first run is the execution named by its id; each resume runs it again as ``<jobId>--r<N>``
(:func:`render_contract.ids.execution_name`), over the same ``jobs/<jobId>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import botocore.exceptions
from render_contract import ids

from .connection import Connection


@dataclass(frozen=True)
class JobRef:
    job_id: str
    execution_arn: str
    bucket: str

    @classmethod
    def from_id(cls, connection: Connection, job_id: str) -> JobRef:
        arn = ids.execution_arn(connection.outputs.state_machine_arn, job_id)
        return cls(job_id, arn, connection.outputs.bucket)

    @property
    def run(self) -> int:
        return ids.execution_of(self.execution_arn)[1]

    @classmethod
    def latest(cls, connection: Connection, job_id: str) -> tuple[JobRef, dict[str, Any] | None]:
        """The job's latest run, and its DescribeExecution (None when the job never started): one call a run."""
        sfn = connection.client("stepfunctions")
        found: tuple[JobRef, dict[str, Any] | None] = (cls.from_id(connection, job_id), None)
        for run in range(1, ids.MAX_RUNS + 1):
            arn = ids.execution_arn(connection.outputs.state_machine_arn, job_id, run)
            try:
                described = sfn.describe_execution(executionArn=arn)
            except botocore.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                    return found
                raise
            found = (cls(job_id, arn, connection.outputs.bucket), described)
        return found
