"""The embedded local cloud: moto in server mode, provisioned from template.yaml, running the real code.

Step Functions executions run the real ``statemachine/render.asl.json`` (moto's ASL interpreter), the Lambda
task runs the real handler of ``lambda/frame_counter/`` and Batch jobs run the real worker as processes. The
stack's outputs are registered as a CloudFormation stack, so clients find them with ``DescribeStacks`` as on AWS.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import sys
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from . import runtimes
from .batch import LocalBatchExecutor
from .cfn import Resolver, load_template
from .shapes import call_args

LOG = logging.getLogger("localcloud")
ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_ID = "123456789012"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "localcloud", "AWS_SECRET_ACCESS_KEY": "localcloud"}
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
STATE_MACHINE_TYPES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
CAPACITY_CHOICES = ("all", "none", "on-demand")


class LocalCloud:
    def __init__(
        self,
        state_dir: Path,
        port: int = 0,
        workers: int | None = None,
        region: str = "us-east-1",
        stack_name: str = "render-on-aws",
        template_path: Path = ROOT / "template.yaml",
        capacity: str = "all",
        capacity_wait_seconds: int | None = None,
        parameters: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.port = port
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.threads_per_job = max(1, (os.cpu_count() or 1) // self.workers)
        self.region = region
        self.stack_name = stack_name
        self.template_path = template_path
        if capacity not in CAPACITY_CHOICES:
            raise ValueError(f"capacity must be one of {CAPACITY_CHOICES}, not {capacity!r}")
        self.capacity = capacity
        """Which queues can get instances: all; none (no Batch job starts, as when no Spot or GPU capacity is to be
        had); on-demand (only queues with an On-Demand compute environment: the CapacityFallback path)."""
        self._environment_types: dict[str, str] = {}
        self.parameters = dict(parameters or {})
        """Template parameters of the local stack (the template's defaults otherwise)."""
        self.capacity_wait_seconds = capacity_wait_seconds
        """The stack's CapacityWaitSeconds (the template's default when None; any value locally, even below 600)."""
        self.template = load_template(template_path)
        self.endpoint = ""
        self.outputs: dict[str, str] = {}
        self._physical: dict[str, dict[str, str]] = {}
        self._functions: dict[str, tuple[Path, str, float]] = {}
        self._server: Any = None
        self.executor: LocalBatchExecutor | None = None
        self._suffix = uuid.uuid4().hex[:8]

    # ---- life cycle ---------------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        from . import patches

        default_user_config["batch"] = {"use_docker": False}
        default_user_config["lambda"] = {"use_docker": False}
        default_user_config["stepfunctions"] = {"execute_state_machine": True}
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server._server.server_port
        self.endpoint = f"http://127.0.0.1:{self.port}"
        os.environ["MOTO_PORT"] = str(self.port)  # where moto's ASL interpreter sends its own service calls
        self.executor = LocalBatchExecutor(self.workers, self.worker_environment(), self.state_dir / "batch")
        patches.install(self.executor, self._invoke_lambda)
        self._provision()
        return self.info()

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
        if self._server is not None:
            self._server.stop()

    def info(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "stack": self.stack_name,
            "outputs": self.outputs,
            "workers": self.workers,
            "capacity": self.capacity,
            "stateDir": str(self.state_dir),
        }

    def client_environment(self) -> dict[str, str]:
        """The environment of every process the cloud starts: boto3 finds the local endpoint by itself."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        environment.update(DUMMY_CREDENTIALS)
        environment.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_REGION": self.region,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return environment

    def worker_environment(self) -> dict[str, str]:
        """The Batch workers' environment: the clients', plus where the Blender runtimes are and how to install one
        on first use (the image has them all; here they are cached venvs, see :mod:`localcloud.runtimes`)."""
        environment = self.client_environment()
        environment[runtimes.RUNTIMES_ENV] = str(runtimes.runtimes_dir())
        environment["RENDER_RUNTIME_INSTALL"] = f"{shlex.quote(sys.executable)} -m localcloud.runtimes"
        return environment

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"mode": "standard"}),
        )

    # ---- provisioning from template.yaml ------------------------------------------------------------------
    def _provision(self) -> None:
        self._resolver = Resolver(
            self.template,
            parameters={
                **self.parameters,
                "MaxVcpus": str(self.workers * self.threads_per_job),
                "JobVcpus": str(self.threads_per_job),
                **({"CapacityWaitSeconds": str(self.capacity_wait_seconds)} if self.capacity_wait_seconds else {}),
            },
            pseudo={
                "AWS::Region": self.region,
                "AWS::AccountId": ACCOUNT_ID,
                "AWS::StackName": self.stack_name,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
            },
            ref=lambda logical: self._provisioned(logical)["Ref"],
            get_att=self._get_att,
        )
        self._role_arn = self.client("iam").create_role(
            RoleName=f"localcloud-{self._suffix}", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
        )["Role"]["Arn"]
        for logical in self.template["Resources"]:
            self._provisioned(logical)
        outputs = {}
        for name, spec in self.template.get("Outputs", {}).items():
            if "Condition" in spec and not self._resolver.condition(spec["Condition"]):
                continue
            outputs[name] = str(self._resolver.resolve(spec["Value"]))
        self.outputs = outputs
        self._register_stack()

    def _get_att(self, logical: str, attribute: str) -> str:
        return self._provisioned(logical).get(attribute, f"local-{logical}-{attribute}")

    def _provisioned(self, logical: str) -> dict[str, str]:
        if logical not in self._physical:
            resource = self.template["Resources"][logical]
            condition = resource.get("Condition")
            if condition and not self._resolver.condition(condition):
                self._physical[logical] = {"Ref": ""}
            else:
                self._physical[logical] = self._create(logical, resource["Type"], resource.get("Properties", {}))
        return self._physical[logical]

    def _name(self, logical: str) -> str:
        return f"{self.stack_name}-{logical}-{self._suffix}".lower()[:63]

    def _create(self, logical: str, resource_type: str, properties: dict[str, Any]) -> dict[str, str]:
        resolve = self._resolver.resolve
        if resource_type == "AWS::S3::Bucket":
            name = self._name(logical)
            self.client("s3").create_bucket(Bucket=name)
            return {"Ref": name, "Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com"}
        if resource_type == "AWS::Batch::ComputeEnvironment":
            # Locally the executor's process slots are the compute; no EC2 behind it.
            arn = self.client("batch").create_compute_environment(
                computeEnvironmentName=self._name(logical),
                type="UNMANAGED",
                state="ENABLED",
                serviceRole=self._role_arn,
            )["computeEnvironmentArn"]
            self._environment_types[arn] = str(resolve(properties.get("ComputeResources", {}).get("Type", "EC2")))
            return {"Ref": arn, "ComputeEnvironmentArn": arn}
        if resource_type == "AWS::Batch::JobQueue":
            order = [
                {"order": int(item["Order"]), "computeEnvironment": item["ComputeEnvironment"]}
                for item in resolve(properties["ComputeEnvironmentOrder"])
            ]
            arn = self.client("batch").create_job_queue(
                jobQueueName=self._name(logical),
                state="ENABLED",
                priority=int(resolve(properties.get("Priority", 1))),
                computeEnvironmentOrder=order,
            )["jobQueueArn"]
            assert self.executor is not None
            self.executor.set_time_limits(arn, resolve(properties.get("JobStateTimeLimitActions", [])))
            types = {self._environment_types.get(item["computeEnvironment"], "EC2") for item in order}
            on_demand = bool(types - {"SPOT", "FARGATE_SPOT"})
            self.executor.set_capacity(arn, self.capacity == "all" or (self.capacity == "on-demand" and on_demand))
            return {"Ref": arn, "JobQueueArn": arn}
        if resource_type == "AWS::Batch::JobDefinition":
            arguments = call_args("batch", "RegisterJobDefinition", resolve(properties))
            arguments["jobDefinitionName"] = self._name(logical)
            arguments.pop("tags", None)
            arn = self.client("batch").register_job_definition(**arguments)["jobDefinitionArn"]
            return {"Ref": arn, "JobDefinitionArn": arn}
        if resource_type in FUNCTION_TYPES:
            return self._create_function(logical, resolve(properties))
        if resource_type in STATE_MACHINE_TYPES:
            definition = (ROOT / properties["DefinitionUri"]).read_text(encoding="utf-8")
            for key, value in resolve(properties.get("DefinitionSubstitutions", {})).items():
                definition = definition.replace("${" + key + "}", str(value))
            name = self._name(logical)
            arn = self.client("stepfunctions").create_state_machine(
                name=name, definition=definition, roleArn=self._role_arn
            )["stateMachineArn"]
            return {"Ref": arn, "Arn": arn, "Name": name}
        return {"Ref": f"local-{logical}"}  # not needed to run jobs locally (IAM, VPC, FIS, ECR, logs...)

    def _create_function(self, logical: str, properties: dict[str, Any]) -> dict[str, str]:
        defaults = self._resolver.resolve(self.template.get("Globals", {}).get("Function", {}))
        properties = {**defaults, **properties}
        name = self._name(logical)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as bundle:
            bundle.writestr("README", "the local cloud runs the handler from its source folder")
        variables = {k: str(v) for k, v in properties.get("Environment", {}).get("Variables", {}).items()}
        timeout = float(properties.get("Timeout", 3))
        response = self.client("lambda").create_function(
            FunctionName=name,
            Runtime=properties.get("Runtime", "python3.12"),
            Role=self._role_arn,
            Handler=properties["Handler"],
            Code={"ZipFile": archive.getvalue()},
            Timeout=int(timeout),
            MemorySize=int(properties.get("MemorySize", 128)),
            Environment={"Variables": variables},
        )
        self._functions[name] = (ROOT / properties["CodeUri"], properties["Handler"], timeout)
        return {"Ref": name, "Arn": response["FunctionArn"]}

    def _register_stack(self) -> None:
        body = {
            "Description": f"Render on AWS on the embedded local cloud ({self.endpoint})",
            "Resources": {"LocalCloud": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": {name: {"Value": value} for name, value in self.outputs.items()},
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # moto warns that it only records the placeholder resource
            self.client("cloudformation").create_stack(StackName=self.stack_name, TemplateBody=json.dumps(body))

    # ---- Lambda ---------------------------------------------------------------------------------------------
    def _invoke_lambda(self, function: Any, payload: bytes) -> tuple[bytes, bool]:
        from .lambda_runtime import invoke

        code_dir, handler, timeout = self._functions[function.function_name]
        environment = self.client_environment()
        environment.update({k: str(v) for k, v in (function.environment_vars or {}).items()})
        environment.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
                "LOCALCLOUD_FUNCTION_ARN": function.function_arn,
            }
        )
        log_path = self.state_dir / "lambda" / f"{function.function_name}.log"
        return invoke(code_dir, handler, payload, environment, timeout, log_path)


def run_forever(cloud: LocalCloud) -> None:
    """Serve until SIGINT or SIGTERM, then stop the workers and the server."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    info = cloud.start()
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    LOG.info("local cloud ready at %s (stack %s, %d workers)", cloud.endpoint, cloud.stack_name, cloud.workers)
    stop.wait()
    LOG.info("stopping the local cloud")
    cloud.stop()
