"""What a finished job used: vCPU-hours from its Batch jobs, and (on AWS) an approximate Spot cost.

The Batch jobs of a job are found through the execution's history (each ``batch:submitJob.sync`` task records
its ``JobId`` in a ``TaskSubmitted`` event), so nothing has to be listed or guessed by name. Every attempt
counts, a Spot retry included: a reclaimed host was paid for up to the reclaim. The artist policy of
``template.yaml`` allows exactly these calls (``states:GetExecutionHistory``, ``batch:DescribeJobs``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
from render_contract.errors import ConnectionFailed

from .connection import Connection
from .jobref import JobRef

DESCRIBE_LIMIT = 100
"""batch:DescribeJobs takes at most 100 ids a call."""

SPOT_USD_PER_VCPU_HOUR: dict[str, float] = {
    "c5": 0.014,
    "c6a": 0.013,
    "c6i": 0.015,
    "c7i": 0.017,
    "m5": 0.017,
    "m6a": 0.016,
    "m6i": 0.018,
    "m7i": 0.020,
    "g5": 0.120,
    "g6": 0.110,
}
"""Approximate Spot prices per vCPU-hour by instance family (us-east-1 averages, late 2025; linux).

Only for an estimate: Spot prices move hourly and differ per zone and size, and Batch's DescribeJobs does not
say which instance type ran a job, so the estimate is a range over the families the stack allows (the
template's defaults: c7i,c6i,c6a,c5,m7i,m6i,m6a,m5; g6,g5 for GPU). The AWS bill is the truth.
"""
CPU_FAMILIES = ("c7i", "c6i", "c6a", "c5", "m7i", "m6i", "m6a", "m5")
GPU_FAMILIES = ("g6", "g5")


@dataclass(frozen=True)
class BatchAttempt:
    job_id: str
    vcpus: float
    seconds: float


@dataclass(frozen=True)
class Usage:
    attempts: tuple[BatchAttempt, ...]

    @property
    def vcpu_seconds(self) -> float:
        return sum(attempt.vcpus * attempt.seconds for attempt in self.attempts)

    @property
    def vcpu_hours(self) -> float:
        return self.vcpu_seconds / 3600.0

    def cost_range(self, families: tuple[str, ...] = CPU_FAMILIES) -> tuple[float, float] | None:
        """(low, high) US dollars at the approximate Spot prices of ``families``; None if none is known."""
        prices = [SPOT_USD_PER_VCPU_HOUR[family] for family in families if family in SPOT_USD_PER_VCPU_HOUR]
        if not prices:
            return None
        return self.vcpu_hours * min(prices), self.vcpu_hours * max(prices)

    def describe(self, with_cost: bool, families: tuple[str, ...] = CPU_FAMILIES) -> str:
        text = f"{self.vcpu_hours:.3f} vCPU-hours in {len(self.attempts)} Batch attempt(s)"
        cost = self.cost_range(families) if with_cost else None
        if cost is not None:
            low, high = cost
            text += f", estimate ${low:.2f}-${high:.2f} at approximate Spot prices"
        return text


def batch_job_ids(connection: Connection, job: JobRef) -> list[str]:
    """The Batch job ids the execution submitted (array parents included), in order."""
    sfn = connection.client("stepfunctions")
    ids: list[str] = []
    kwargs: dict[str, Any] = {"executionArn": job.execution_arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        for event in page.get("events", []):
            details = event.get("taskSubmittedEventDetails")
            if not details or details.get("resourceType") != "batch":
                continue
            try:
                job_id = json.loads(details.get("output") or "{}").get("JobId")
            except ValueError:
                job_id = None
            if job_id and job_id not in ids:
                ids.append(job_id)
        if not page.get("nextToken"):
            return ids
        kwargs["nextToken"] = page["nextToken"]


def _describe(batch: Any, ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), DESCRIBE_LIMIT):
        found += batch.describe_jobs(jobs=ids[start : start + DESCRIBE_LIMIT]).get("jobs", [])
    return found


def job_vcpus(described: dict[str, Any]) -> float:
    """vCPUs of one Batch job: ``resourceRequirements`` VCPU (current API) or the legacy ``vcpus``."""
    container = described.get("container") or {}
    for requirement in container.get("resourceRequirements") or []:
        if requirement.get("type") == "VCPU":
            return float(requirement["value"])
    return float(container.get("vcpus") or 1)


def attempts_of(described: dict[str, Any]) -> list[BatchAttempt]:
    """Each attempt's run time; a job without attempt records counts its own startedAt..stoppedAt."""
    vcpus = job_vcpus(described)
    spans = [(attempt.get("startedAt"), attempt.get("stoppedAt")) for attempt in described.get("attempts") or []] or [
        (described.get("startedAt"), described.get("stoppedAt"))
    ]
    return [
        BatchAttempt(described["jobId"], vcpus, max(0.0, (stopped - started) / 1000.0))
        for started, stopped in spans
        if started and stopped
    ]


def usage(connection: Connection, job: JobRef) -> Usage:
    """The compute a job used; array jobs count their children (the parent's own times only span them)."""
    try:
        ids = batch_job_ids(connection, job)
        batch = connection.client("batch")
        attempts: list[BatchAttempt] = []
        for described in _describe(batch, ids):
            size = (described.get("arrayProperties") or {}).get("size")
            if size:
                children = _describe(batch, [f"{described['jobId']}:{index}" for index in range(int(size))])
                for child in children:
                    attempts += attempts_of(child)
            else:
                attempts += attempts_of(described)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise ConnectionFailed(f"cannot read the job's Batch usage: {error}") from error
    return Usage(tuple(attempts))
