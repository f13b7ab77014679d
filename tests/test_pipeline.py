"""End to end, as `make demo` runs it: a real .blend through the real state machine, Lambda, worker and FFmpeg."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from render_contract import ids

from localcloud.process import LocalCloudProcess
from tests.conftest import make_scene, run_cli


def probe(video: Path) -> dict:
    """What ffprobe would say, read with PyAV (FFmpeg's libraries): codec, pixel format, size, rate, frames."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "width": stream.width,
            "height": stream.height,
            "fps": Fraction(stream.average_rate),
            "frames": frames,
        }


def execution(cloud: LocalCloudProcess, job_id: str) -> dict:
    machine = cloud.outputs["StateMachineArn"]
    arn = ids.execution_arn(machine, job_id)
    return cloud.client("stepfunctions").describe_execution(executionArn=arn)


@pytest.mark.slow
def test_tiny_scene_renders_to_a_correct_mp4(local_cloud: LocalCloudProcess, tiny_scene: Path, tmp_path: Path) -> None:
    result = run_cli(local_cloud, "submit", str(tiny_scene), "--wait", "--download", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    job_id, video = result.stdout.split()
    video = Path(video)
    assert video.parent == tmp_path / "out" and video.suffix == ".mp4"

    info = probe(video)
    assert (info["codec"], info["pix_fmt"]) == ("h264", "yuv420p")
    assert (info["width"], info["height"]) == (64, 36)
    assert info["fps"] == 24
    assert len(info["frames"]) == 6
    for before, after in zip(info["frames"], info["frames"][1:], strict=False):
        assert np.abs(before.astype(int) - after.astype(int)).mean() > 0.5, "consecutive frames should differ"

    described = execution(local_cloud, job_id)
    assert described["status"] == "SUCCEEDED"
    output = json.loads(described["output"])
    assert output["jobId"] == job_id
    assert output["frames"] == {"start": 1, "end": 6, "step": 1, "count": 6}
    assert output["fps"] == 24 and output["scene"] == "Scene"
    assert output["videoUri"] == f"s3://{local_cloud.bucket}/jobs/{job_id}/tiny.mp4"
    assert ("rendering" in result.stderr and "6/6" in result.stderr) or "done" in result.stderr


@pytest.mark.slow
def test_a_failed_execution_ends_with_a_named_error(local_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "nocamera.blend", "--frame-end", "2", "--engine", "workbench", "--no-camera")
    result = run_cli(local_cloud, "submit", str(scene), "--wait")
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("NoCamera: ")
    job_id = result.stdout.split()[0]
    described = execution(local_cloud, job_id)
    assert (described["status"], described["error"]) == ("FAILED", "NoCamera")
