"""Network faults (issue 9 item 4): a cloud that dies mid-upload, a network that drops mid-upload, and throttling.

No mocks: a real CLI process uploads over real HTTP. The "network" in the drop and throttle drills is a small
HTTP proxy in the test, in front of the drill cloud's endpoint, that forwards every request unchanged except the
ones the drill decides to hold, cut or answer with AWS's throttling errors. The add-on uses the same core
(``starting.submit_prepared``, ``cas.upload``), so it meets the same errors (its own tests belong to the add-on
engineer).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from render_contract import ids

from localcloud.process import LocalCloudProcess
from localcloud.process import start as start_local_cloud
from tests.conftest import make_scene

from .support import bpy_edit, bucket_keys, last_line, wait_for

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "upgrade", "te"}


@dataclass
class Seen:
    method: str
    path: str
    target: str
    """``X-Amz-Target`` of JSON APIs (Step Functions), else empty."""
    answered: int
    at: float


@dataclass
class Proxy:
    """A forwarding HTTP proxy with a ``fault`` hook: return (status, headers, body) to answer instead of
    forwarding, or ``None`` to forward. ``drop()`` cuts every connection and refuses new ones."""

    upstream: str
    fault: Callable[[str, str, dict[str, str]], tuple[int, dict[str, str], bytes] | None] = lambda *_: None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        proxy = self
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._sockets.add(self.connection)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items()}
                target = headers.get("X-Amz-Target", "")
                answer = proxy.fault(self.command, self.path, headers)
                if answer is None:
                    upstream = urlparse(proxy.upstream)
                    connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
                    forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
                    forwarded["Content-Length"] = str(len(body))
                    connection.request(self.command, self.path, body=body, headers=forwarded)
                    response = connection.getresponse()
                    status, reply = response.status, response.read()
                    reply_headers = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                    connection.close()
                else:
                    status, reply_headers, reply = answer
                proxy.seen.append(Seen(self.command, self.path, target, status, time.monotonic()))
                self.send_response(status)
                length = str(len(reply))
                for name, value in reply_headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                    elif self.command == "HEAD":
                        length = value  # a HEAD reply has no body, but its length is the object's size
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_: None  # type: ignore[method-assign]  # a cut connection is the point
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def drop(self) -> None:
        """The network goes away: the listening socket closes and open connections are reset."""
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _project(base: Path, big_mb: int) -> tuple[Path, dict[str, Path]]:
    """A multi-file project: the main .blend and three small textures and one big one (random bytes: BAT only
    traces paths, and nothing renders this job)."""
    root = base / "project"
    (root / "textures").mkdir(parents=True)
    blend = make_scene(root / "main.blend", "--frame-end", "2", "--resolution", "64", "36", "--engine", "workbench")
    textures = {"small1.png": 1, "small2.png": 1, "small3.png": 1, "big.png": big_mb}
    for name, size in textures.items():
        (root / "textures" / name).write_bytes(os.urandom(size * 1024 * 1024))
    code = "".join(
        f"image = bpy.data.images.new({name!r}, 4, 4)\nimage.source = 'FILE'\n"
        f"image.filepath = '//textures/{name}'\nimage.use_fake_user = True\n"
        for name in textures
    )
    bpy_edit(blend, code)
    files = {"main.blend": blend, **{f"textures/{name}": root / "textures" / name for name in textures}}
    return blend, files


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(endpoint: str, stack: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    command = [str(Path(os.sys.executable).parent / "render-on-aws"), "--endpoint", endpoint, "--stack", stack, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _env(cloud_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**cloud_env, "RENDER_ON_AWS_CACHE_DIR": str(tmp_path / "cache")}


def _uploaded_total(stderr: str) -> float | None:
    """The total of the first progress line (``uploading 0.0/12.6 MB``): what this submit set out to upload."""
    match = re.search(r"uploading [0-9.]+/([0-9.]+) MB", stderr)
    return float(match[1]) if match else None


@pytest.mark.slow
def test_the_cloud_dies_mid_upload(tmp_path: Path) -> None:
    """Kill the local cloud (SIGKILL, nothing throttled) while the CLI's progress shows a 150 MB upload under way:
    the CLI ends with a named error on its last line, not a traceback."""
    blend, _ = _project(tmp_path, big_mb=150)
    cloud = start_local_cloud(tmp_path / "dying", workers=1)
    try:
        process = _cli(cloud.endpoint, cloud.stack, _env(cloud.client_environment(), tmp_path), "submit", str(blend))
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            match = re.search(r"uploading ([0-9.]+)/([0-9.]+) MB", line)
            if match and 0 < float(match[1]) < float(match[2]):
                cloud.process.kill()
                break
        assert cloud.process.wait(timeout=30) is not None
        rest = process.stderr.read()
        process.wait(timeout=300)
        stderr = "".join(lines) + rest
    finally:
        cloud.stop()
    assert process.returncode == 1, stderr[-1500:]
    assert re.match(r"(ConnectionFailed|UploadFailed): ", last_line(stderr)), stderr[-1500:]
    assert "Traceback" not in stderr
    print(f"\ncloud killed mid-upload: {last_line(stderr)}")


@pytest.mark.slow
def test_a_dropped_network_keeps_what_was_uploaded_and_resubmit_sends_only_the_rest(
    drill_cloud: LocalCloudProcess, tmp_path: Path
) -> None:
    blend, files = _project(tmp_path, big_mb=40)
    hashes = {rel: _sha(path) for rel, path in files.items()}
    big_key = f"cas/sha256/{hashes['textures/big.png']}"
    released = threading.Event()

    def hold_the_big_file(method: str, path: str, headers: dict[str, str]) -> None:
        if big_key in path and method in ("PUT", "POST"):
            released.wait(120)  # the network is cut while this request is on the wire...
            raise ConnectionAbortedError("network cut")  # ...so its bytes never reach the cloud
        return None

    proxy = Proxy(drill_cloud.endpoint, fault=hold_the_big_file)
    env = _env(drill_cloud.client_environment(), tmp_path)
    first = _cli(proxy.endpoint, drill_cloud.stack, env, "submit", str(blend))
    small = {f"cas/sha256/{digest}" for rel, digest in hashes.items() if rel != "textures/big.png"}
    assert wait_for(lambda: small <= bucket_keys(drill_cloud), timeout=120), "the small files never arrived"
    proxy.drop()
    released.set()
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 1, stderr[-1500:]
    assert re.match(r"(ConnectionFailed|UploadFailed): ", last_line(stderr)), stderr[-1500:]
    assert "Traceback" not in stderr
    kept = bucket_keys(drill_cloud)
    assert small <= kept and big_key not in kept, "what was uploaded stays; the cut file is not half-stored"
    assert not [key for key in kept if key.endswith("/manifest.json") and "main" in key]

    counting = Proxy(drill_cloud.endpoint)
    second = _cli(counting.endpoint, drill_cloud.stack, env, "submit", str(blend))
    out, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-1500:]
    in_bucket = f"/{drill_cloud.bucket}/"
    uploads = {
        s.path.split("?")[0].removeprefix(in_bucket)
        for s in counting.seen
        if s.method in ("PUT", "POST") and s.path.startswith(in_bucket)
    }
    cas_uploads = {key for key in uploads if key.startswith("cas/")}
    assert cas_uploads == {big_key}, cas_uploads
    assert _uploaded_total(stderr) == pytest.approx(40 * 1024 * 1024 / 1e6, abs=0.06)
    counting.drop()
    job_id = out.split()[0]
    drill_cloud.client("stepfunctions").stop_execution(
        executionArn=ids.execution_arn(drill_cloud.outputs["StateMachineArn"], job_id)
    )


@pytest.mark.slow
def test_throttling_is_retried_with_backoff(drill_cloud: LocalCloudProcess, tmp_path: Path) -> None:
    """S3 answers 503 SlowDown and Step Functions ThrottlingException three times each; the submit still succeeds
    and the proxy counts the retries the client made."""
    throttled = {"s3": 0, "sfn": 0}
    limit = 3

    def throttle(method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes] | None:
        if method == "PUT" and "/cas/sha256/" in path and throttled["s3"] < limit:
            throttled["s3"] += 1
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            return 503, {"Content-Type": "application/xml"}, body
        if headers.get("X-Amz-Target", "").endswith(".StartExecution") and throttled["sfn"] < limit:
            throttled["sfn"] += 1
            body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
            return 400, {"Content-Type": "application/x-amz-json-1.0"}, body
        return None

    proxy = Proxy(drill_cloud.endpoint, fault=throttle)
    scene = make_scene(
        tmp_path / "throttled.blend", "--frame-end", "1", "--resolution", "64", "36", "--engine", "workbench"
    )
    submit = _cli(
        proxy.endpoint,
        drill_cloud.stack,
        _env(drill_cloud.client_environment(), tmp_path),
        "submit",
        str(scene),
        "--wait",
    )
    _, stderr = submit.communicate(timeout=300)
    proxy.drop()
    assert submit.returncode == 0, stderr[-1500:]
    puts = [s for s in proxy.seen if s.method == "PUT" and "/cas/sha256/" in s.path]
    starts = [s for s in proxy.seen if s.target.endswith(".StartExecution")]
    assert [s.answered for s in puts] == [503] * limit + [200]
    assert [s.answered for s in starts] == [400] * limit + [200]
    gaps = {
        name: [round(b.at - a.at, 2) for a, b in itertools.pairwise(seen)]
        for name, seen in (("s3", puts), ("sfn", starts))
    }
    print(f"\nthrottled: {limit} SlowDown + {limit} ThrottlingException retried; gaps between tries (s): {gaps}")
