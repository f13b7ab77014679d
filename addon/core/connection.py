"""Finding the stack: credentials through boto3's own chain, outputs through CloudFormation DescribeStacks.

The same code serves AWS and the embedded local cloud (an ``endpoint`` URL); nothing here stores a secret.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.exceptions
from botocore.config import Config
from render_contract.errors import ConnectionFailed, StackNotFound

DEFAULT_STACK = "render-on-aws"
REQUIRED_OUTPUTS = ("BucketName", "StateMachineArn")
LOCAL_DUMMY_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
CLIENT_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 8}, connect_timeout=10, read_timeout=60)
"""Adaptive retries back off on throttling (S3 503 SlowDown, Step Functions ThrottlingException)."""


@dataclass(frozen=True)
class ConnectionSettings:
    stack: str = DEFAULT_STACK
    region: str | None = None
    profile: str | None = None
    endpoint: str | None = None
    """An endpoint URL (the local cloud's); None for AWS."""
    artist: str | None = None
    """The artist's ``render-artist`` IAM tag: job ids start with it, as the stack's artist policy requires."""

    @property
    def is_local(self) -> bool:
        if not self.endpoint:
            return False
        host = urlparse(self.endpoint).hostname or ""
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class StackOutputs:
    bucket: str
    state_machine_arn: str
    values: dict[str, str]

    @classmethod
    def from_outputs(cls, stack: str, values: dict[str, str]) -> StackOutputs:
        missing = [name for name in REQUIRED_OUTPUTS if not values.get(name)]
        if missing:
            raise StackNotFound(f"stack {stack!r} has no output {', '.join(missing)}: is it a Render on AWS stack?")
        return cls(values["BucketName"], values["StateMachineArn"], values)


class Connection:
    """A boto3 session and the stack's outputs, for one stack; safe to share between threads.

    boto3 sessions are not thread-safe but its clients are: clients are made once per service under a lock and
    shared. Making a client parses botocore's large JSON models while holding the GIL (tens of milliseconds),
    so making each client once also keeps Blender's main thread from stalling while jobs are followed.
    """

    def __init__(self, settings: ConnectionSettings, outputs: StackOutputs | None = None) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._clients: dict[str, Any] = {}
        try:
            self.session = boto3.Session(profile_name=settings.profile or None, region_name=settings.region or None)
        except botocore.exceptions.ProfileNotFound as error:
            raise ConnectionFailed(f"AWS profile {settings.profile!r} is not in your AWS config") from error
        if not self.session.region_name:
            if settings.is_local:
                self.session = boto3.Session(region_name="us-east-1")
            else:
                raise ConnectionFailed("no AWS region: choose one in the preferences or pass --region")
        self._credentials: dict[str, str] = {}
        if settings.endpoint and self.session.get_credentials() is None:
            self._credentials = LOCAL_DUMMY_CREDENTIALS  # the local cloud accepts any credentials
        self._outputs = outputs

    def client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self.session.client(
                    service, endpoint_url=self.settings.endpoint or None, config=CLIENT_CONFIG, **self._credentials
                )
                self._clients[service] = client
            return client

    @property
    def outputs(self) -> StackOutputs:
        with self._lock:
            if self._outputs is None:
                self._outputs = self.describe_stack()
            return self._outputs

    def describe_stack(self) -> StackOutputs:
        stack = self.settings.stack
        try:
            response = self.client("cloudformation").describe_stacks(StackName=stack)
        except botocore.exceptions.ClientError as error:
            message = error.response.get("Error", {}).get("Message", str(error))
            if "does not exist" in message:
                raise StackNotFound(f"no stack named {stack!r} in {self.session.region_name}") from error
            raise ConnectionFailed(f"cannot read stack {stack!r}: {message}") from error
        except botocore.exceptions.NoCredentialsError as error:
            raise ConnectionFailed("no AWS credentials: log in (aws sso login) or choose a profile") from error
        except botocore.exceptions.EndpointConnectionError as error:
            where = self.settings.endpoint or f"AWS in {self.session.region_name}"
            raise ConnectionFailed(f"cannot reach {where}: is it running and is the network up?") from error
        except botocore.exceptions.BotoCoreError as error:
            raise ConnectionFailed(f"cannot reach AWS: {error}") from error
        outputs = response["Stacks"][0].get("Outputs", [])
        return StackOutputs.from_outputs(stack, {item["OutputKey"]: item["OutputValue"] for item in outputs})


_CONNECTIONS: dict[ConnectionSettings, Connection] = {}
_CONNECTIONS_LOCK = threading.Lock()


def connect(settings: ConnectionSettings, refresh: bool = False) -> Connection:
    """The Connection for these settings, shared by every thread, with the stack's outputs read.

    One per settings: its clients are made once (botocore's model parsing holds the GIL) and are thread-safe.
    The outputs (DescribeStacks) are cached in memory only, never on disk; ``refresh`` reads them again.
    """
    with _CONNECTIONS_LOCK:
        connection = None if refresh else _CONNECTIONS.get(settings)
    if connection is None:
        connection = Connection(settings)
        connection.outputs  # noqa: B018 - read now, on this background thread, so failures surface here
        with _CONNECTIONS_LOCK:
            _CONNECTIONS[settings] = connection
    return connection


def forget_outputs() -> None:
    with _CONNECTIONS_LOCK:
        _CONNECTIONS.clear()


def test_connection(settings: ConnectionSettings) -> str:
    """Plain words on success; raises the core's named errors (StackNotFound, ConnectionFailed) otherwise."""
    connection = connect(settings, refresh=True)
    where = settings.endpoint or f"AWS {connection.session.region_name}"
    return f"Connected: stack {settings.stack!r} on {where}, bucket {connection.outputs.bucket}"
