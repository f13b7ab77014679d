"""A submitted job's identity: its id (the execution's name), its execution ARN and the bucket of its data."""

from __future__ import annotations

from dataclasses import dataclass

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

    @classmethod
    def from_arn(cls, connection: Connection, execution_arn: str) -> JobRef:
        return cls(ids.job_id_of(execution_arn), execution_arn, connection.outputs.bucket)
