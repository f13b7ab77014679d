"""A 10,000-frame job: the plan is made, the array fits Batch's limits, every payload fits Step Functions'.

Submits a tiny scene with its range overridden to 10,000 frames and one frame per job (the worst case: more
chunks than Batch's 10,000 limit would allow if the range were larger) to the local cloud, waits until the
render step has started, stops the execution (nothing needs rendering) and reads the execution history:
prints the array size of the render job and the largest state input/output, then `largest_payload_kib` last.
Step Functions' limit is 256 KiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import make_demo_scene
from render_contract import ids

from localcloud import process as localcloud

LIMIT_KIB = 256


def main() -> None:
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory(prefix="bench-payload-") as temp:
        work = Path(temp)
        scene = work / "tiny.blend"
        make_demo_scene(scene, "--frame-end", "2", "--resolution", "16", "16", "--engine", "workbench")
        cloud = localcloud.start(work / "cloud", workers=2)
        try:
            submitted = subprocess.run(
                cloud.cli_command("submit", str(scene), "--frames", f"1-{frames}", "--frames-per-job", "1"),
                check=True,
                capture_output=True,
                text=True,
                env=cloud.client_environment(),
            )
            job_id = submitted.stdout.split()[-1]
            sfn = cloud.client("stepfunctions")
            arn = ids.execution_arn(cloud.outputs["StateMachineArn"], job_id)
            events: list[dict] = []
            for _ in range(600):
                events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
                if any(
                    e["type"] == "TaskStateEntered" and "Render" in e["stateEnteredEventDetails"]["name"]
                    for e in events
                ) or any(e["type"] == "ExecutionFailed" for e in events):
                    break
                time.sleep(0.5)
            sfn.stop_execution(executionArn=arn, error="BenchDone", cause="payload measured")
            time.sleep(1)
            events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
            plan = json.loads(
                cloud.client("s3").get_object(Bucket=cloud.bucket, Key=f"jobs/{job_id}/job.json")["Body"].read()
            )
        finally:
            cloud.stop()
    sizes = []
    for event in events:
        for details in event.values():
            if isinstance(details, dict):
                for key in ("input", "output"):
                    if isinstance(details.get(key), str):
                        sizes.append((len(details[key].encode()), event["type"], key))
    largest = max(sizes)
    print(
        f"frames: {frames}, chunks in the plan: {len(plan['chunks'])}, frames per job: {plan['frames_per_job']}"
        f" (raised: {plan['frames_per_job_raised']})"
    )
    print(f"array size within Batch's 2..10,000: {2 <= len(plan['chunks']) <= 10_000}")
    print(f"largest payload: {largest[0]} bytes ({largest[1]} {largest[2]}), limit {LIMIT_KIB} KiB")
    print(f"largest_payload_kib: {largest[0] / 1024:.2f}")


if __name__ == "__main__":
    main()
