"""Starting and stopping ``python -m localcloud`` from another program (the demo, the tests, the benchmarks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class LocalCloudProcess:
    """A running local cloud: the info of its first line, and how to reach it as a client would."""

    def __init__(self, process: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.process = process
        self.info = info
        self.endpoint: str = info["endpoint"]
        self.stack: str = info["stack"]
        self.outputs: dict[str, str] = info["outputs"]
        self.bucket: str = info["outputs"]["BucketName"]
        self.state_dir = Path(info["stateDir"])

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.info["region"],
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def cli_command(self, *args: str) -> list[str]:
        """The real ``render-on-aws`` command line pointed at this cloud."""
        executable = Path(sys.executable).parent / "render-on-aws"
        return [str(executable), "--endpoint", self.endpoint, "--stack", self.stack, *args]

    def client_environment(self) -> dict[str, str]:
        """The caller's environment without AWS settings, so nothing reaches a real account by mistake."""
        return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def worker_logs(self) -> str:
        """Every Batch attempt's log so far (``rendered frame N`` lines, tracebacks)."""
        return "\n".join(path.read_text() for path in sorted(self.state_dir.glob("batch/*/attempt-*.log")))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(
    state_dir: Path, workers: int | None = None, extra_args: tuple[str, ...] = (), niceness: int = 0
) -> LocalCloudProcess:
    """Starts the local cloud and waits for its first line (its log goes to ``state_dir/localcloud.log``).

    ``niceness`` lowers the priority of the cloud and its workers: a benchmark of the artist's side (Blender's
    responsiveness) runs them at low priority, as they stand in for machines in the cloud, not on the desk.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "localcloud", "--state-dir", str(state_dir), *extra_args]
    if workers:
        command += ["--workers", str(workers)]
    with open(state_dir / "localcloud.log", "w") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
            preexec_fn=(lambda: os.nice(niceness)) if niceness else None,
        )
    line = process.stdout.readline() if process.stdout else ""
    if not line:
        process.kill()
        raise RuntimeError(f"the local cloud did not start:\n{(state_dir / 'localcloud.log').read_text()}")
    return LocalCloudProcess(process, json.loads(line))
