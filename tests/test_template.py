"""Checks of template.yaml and the state machine, offline: linters, security rules, and the contracts with the code.

cfn-lint, aws-sam-translator, checkov and statelint run from their own venv (.venv/lint, requirements-lint.txt):
checkov and the translator pin boto3/pydantic versions that conflict with requirements.txt. The fixture below
builds it once (pinned) when it is missing or out of date; `make setup` may build it ahead of time.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml
from render_contract import exitcodes, ids
from render_contract.errors import BATCH_CAPACITY_REASON, AccessDenied, CorruptFrame, NoSpace, RenderFailed
from render_worker import cli as worker_cli

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
ASL = ROOT / "statemachine" / "render.asl.json"
LINT_REQUIREMENTS = ROOT / "requirements-lint.txt"
LINT_VENV = ROOT / ".venv" / "lint"

DUMMY_SUBSTITUTIONS = {
    "FrameCounterFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:frame-counter",
    "RenderJobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/render:1",
    "StitchJobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/stitch:1",
    "JobQueueArn": "arn:aws:batch:us-east-1:123456789012:job-queue/render",
    "OnDemandJobQueueArn": "arn:aws:batch:us-east-1:123456789012:job-queue/render-on-demand",
}

# What the embedded local cloud reads from the template, and the intrinsics its resolver knows.
LOCAL_CLOUD_RESOURCES = (
    "RenderBucket",
    "FrameCounterFunction",
    "JobQueue",
    "RenderJobDefinition",
    "StitchJobDefinition",
    "RenderStateMachine",
)
LOCAL_CLOUD_FUNCTIONS = {
    "Ref",
    "Fn::GetAtt",
    "Fn::Sub",
    "Fn::If",
    "Fn::Equals",
    "Fn::Not",
    "Fn::And",
    "Fn::Or",
    "Fn::Join",
    "Fn::Select",
    "Condition",
}
LOCAL_CLOUD_PSEUDO = {
    "AWS::Region",
    "AWS::AccountId",
    "AWS::StackName",
    "AWS::Partition",
    "AWS::URLSuffix",
    "AWS::NoValue",
}
REQUIRED_OUTPUTS = {
    "BucketName",
    "StateMachineArn",
    "JobQueueArn",
    "RenderJobDefinitionArn",
    "StitchJobDefinitionArn",
    "ArtistPolicyArn",
    "AdminPolicyArn",
    "LogGroupName",
    "FisExperimentTemplateId",
}
WORKER_COMMAND = ["Ref::action", "-i", "Ref::inputUri", "-o", "Ref::outputUri", "-f", "Ref::framesPerJob"]
PHYSICAL_NAME_PROPERTIES = {
    "Name",
    "BucketName",
    "FunctionName",
    "StateMachineName",
    "JobQueueName",
    "ComputeEnvironmentName",
    "JobDefinitionName",
    "RepositoryName",
    "RoleName",
    "ManagedPolicyName",
    "InstanceProfileName",
    "LaunchTemplateName",
    "GroupName",
    "LogGroupName",
    "AlarmName",
    "ExperimentTemplateName",
}

# Actions that support no resource-level permissions (Service Authorization Reference), the only ones allowed "*".
ACTIONS_WITHOUT_RESOURCES = {
    "batch:DescribeJobs",
    "batch:ListJobs",
    "ecr:GetAuthorizationToken",
    "ec2:DescribeInstances",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}
# AWS managed policies the template may attach (SAM adds the first two for Lambda logs and X-Ray tracing).
ALLOWED_MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "AmazonEC2ContainerServiceforEC2Role",
}
# For each service, the stack resources an Allow statement's resources must name (rendered as ${Logical...}).
SCOPES = {
    "s3": ("${RenderBucket.Arn}",),
    "states": ("${RenderStateMachine}", "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:"),
    "lambda": ("${FrameCounterFunction",),
    "batch": (
        "${JobQueue}",
        "${OnDemandJobQueue}",
        "${RenderJobDefinition}",
        "${StitchJobDefinition}",
        "arn:${AWS::Partition}:batch:${AWS::Region}:${AWS::AccountId}:job/",
    ),
    "ecr": ("${WorkerRepository.Arn}",),
    "codebuild": ("${WorkerImageProject.Arn}",),
    "logs": ("${LogGroup.Arn}",),
    "events": (
        "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:rule/StepFunctionsGetEventsForBatchJobs",
    ),
    "cloudformation": (
        "arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/${AWS::StackName}/",
    ),
    "ec2": ("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/",),
}

TRANSLATE = r"""
import json, os, sys
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
from cfnlint.decode import cfn_yaml
from samtranslator.public.translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

class OfflinePolicies(ManagedPolicyLoader):  # SAM's bundled policy map resolves the names; no IAM call
    def __init__(self):
        pass
    def load(self):
        return {}

template = json.loads(json.dumps(cfn_yaml.load(sys.argv[1])))
for resource in template["Resources"].values():  # what `sam package` does to local paths
    properties = resource.get("Properties", {})
    if resource["Type"] == "AWS::Serverless::Function":
        properties["CodeUri"] = "s3://sam-artifacts/frame_counter.zip"
    if resource["Type"] == "AWS::Serverless::LayerVersion":
        properties["ContentUri"] = "s3://sam-artifacts/contract_layer.zip"
    if resource["Type"] == "AWS::Serverless::StateMachine":
        properties["DefinitionUri"] = {"Bucket": "sam-artifacts", "Key": "render.asl.json"}
with open(sys.argv[2], "w") as out:
    json.dump(transform(template, {}, OfflinePolicies()), out, indent=1)
"""


# ---- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lint_bin() -> Path:
    """.venv/lint/bin, built from requirements-lint.txt when missing or stale (under a lock: sessions share it)."""
    digest = hashlib.sha1(LINT_REQUIREMENTS.read_bytes()).hexdigest()[:12]
    stamp = LINT_VENV / f".installed-{digest}"
    LINT_VENV.parent.mkdir(exist_ok=True)
    with open(LINT_VENV.parent / "lint.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            for old in LINT_VENV.glob(".installed-*"):
                old.unlink()
            subprocess.run([sys.executable, "-m", "venv", str(LINT_VENV)], check=True)
            install = [str(LINT_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            result = subprocess.run(
                [*install, "--disable-pip-version-check", "-r", str(LINT_REQUIREMENTS)], capture_output=True, text=True
            )
            assert result.returncode == 0, f"could not build {LINT_VENV}:\n{result.stdout}\n{result.stderr}"
            stamp.touch()
    return LINT_VENV / "bin"


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))


@pytest.fixture(scope="session")
def translated_path(lint_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sam") / "template.json"
    result = subprocess.run(
        [str(lint_bin / "python"), "-c", TRANSLATE, str(TEMPLATE), str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def translated(translated_path: Path) -> dict[str, Any]:
    return json.loads(translated_path.read_text())


@pytest.fixture(scope="session")
def filled_asl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = ASL.read_text(encoding="utf-8")
    for name, value in DUMMY_SUBSTITUTIONS.items():
        text = text.replace("${" + name + "}", value)
    path = tmp_path_factory.mktemp("asl") / "render.asl.json"
    path.write_text(text, encoding="utf-8")
    return path


# ---- helpers ----------------------------------------------------------------------------------------------------
def render(value: Any) -> str:
    """An intrinsic as text: {"Fn::GetAtt": ["B", "Arn"]} -> "${B.Arn}", {"Ref": "Q"} -> "${Q}", Sub as written."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return "${" + arg + "}"
        if key == "Fn::GetAtt":
            return "${" + ".".join(arg if isinstance(arg, list) else arg.split(".")) + "}"
        if key == "Fn::Sub":
            if isinstance(arg, str):
                return arg
            text, variables = arg
            for name, variable in variables.items():
                text = text.replace("${" + name + "}", render(variable))
            return text
        if key == "Fn::Join":
            return arg[0].join(render(item) for item in arg[1])
    return json.dumps(value)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_documents(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for logical, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            documents += [(logical, policy["PolicyDocument"]) for policy in properties.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::S3::BucketPolicy"):
            documents.append((logical, properties["PolicyDocument"]))
    return documents


def allow_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (logical, statement)
        for logical, document in policy_documents(template)
        for statement in as_list(document["Statement"])
        if statement["Effect"] == "Allow"
    ]


def retry_decision(strategy: dict[str, Any], exit_code: int | None, reason: str) -> str:
    """What AWS Batch does with a failed attempt: the first matching EvaluateOnExit entry wins; none -> RETRY."""
    for entry in strategy["EvaluateOnExit"]:
        checks = []
        if "OnExitCode" in entry:
            checks.append(exit_code is not None and fnmatch.fnmatchcase(str(exit_code), entry["OnExitCode"]))
        if "OnStatusReason" in entry:
            checks.append(fnmatch.fnmatchcase(reason, entry["OnStatusReason"]))
        if "OnReason" in entry:
            checks.append(False)
        if checks and all(checks):
            return entry["Action"].upper()
    return "RETRY"


def intrinsics(value: Any) -> list[tuple[str, Any]]:
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                found.append((key, item))
            found += intrinsics(item)
    elif isinstance(value, list):
        for item in value:
            found += intrinsics(item)
    return found


def checkov(lint_bin: Path, path: Path, home: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            str(lint_bin / "checkov"),
            "--file",
            str(path),
            "--framework",
            "cloudformation",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "LOG_LEVEL": "ERROR"},  # a fresh HOME: no cache
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def checkov_skips(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (logical, skip["id"]): skip.get("comment", "")
        for logical, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }


# ---- linters ------------------------------------------------------------------------------------------------------
def test_cfn_lint_template(lint_bin: Path) -> None:
    result = subprocess.run([str(lint_bin / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_translated_template(lint_bin: Path, translated_path: Path) -> None:
    result = subprocess.run([str(lint_bin / "cfn-lint"), str(translated_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_statelint_accepts_the_state_machine(lint_bin: Path, filled_asl: Path) -> None:
    result = subprocess.run([str(lint_bin / "statelint"), str(filled_asl)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_moto_asl_parser_accepts_the_state_machine(filled_asl: Path) -> None:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    AmazonStateLanguageParser.parse(filled_asl.read_text(encoding="utf-8"))


@pytest.mark.parametrize("which", ["template.yaml", "translated"])
def test_checkov_finds_no_failure(
    which: str, lint_bin: Path, translated_path: Path, template: dict[str, Any], tmp_path: Path
) -> None:
    report = checkov(lint_bin, TEMPLATE if which == "template.yaml" else translated_path, tmp_path)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == [], failed
    assert summary["parsing_errors"] == 0 and summary["passed"] > 50, summary
    skipped = {(c["resource"].split(".", 1)[1], c["check_id"]) for c in report["results"]["skipped_checks"]}
    assert skipped == set(checkov_skips(template)), "a skip in template.yaml is stale or one was not applied"


def test_every_checkov_skip_says_why(template: dict[str, Any]) -> None:
    skips = checkov_skips(template)
    assert skips
    assert {key: comment for key, comment in skips.items() if len(comment.split()) < 8} == {}


# ---- contracts with the code --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("logical", "attempts"), [("RenderJobDefinition", 5), ("StitchJobDefinition", 3)])
def test_retry_strategy_matches_worker_exit_codes(template: dict[str, Any], logical: str, attempts: int) -> None:
    strategy = template["Resources"][logical]["Properties"]["RetryStrategy"]
    assert strategy["Attempts"] == attempts
    assert len(strategy["EvaluateOnExit"]) <= 5  # Batch's limit
    host_lost = f"{exitcodes.HOST_LOST_REASON_PREFIX} (instance i-0123456789abcdef0) terminated."
    assert retry_decision(strategy, None, host_lost) == "RETRY"
    assert retry_decision(strategy, exitcodes.EXIT_FAILED, host_lost) == "RETRY"
    for code in exitcodes.RETRIED_EXIT_CODES:
        assert retry_decision(strategy, code, "Essential container in task exited") == "RETRY", code
    for code in (exitcodes.EXIT_FAILED, 1, 2, 139):
        assert retry_decision(strategy, code, "Essential container in task exited") == "EXIT", code
    retried = {
        entry["OnExitCode"]
        for entry in strategy["EvaluateOnExit"]
        if entry["Action"] == "RETRY" and "OnExitCode" in entry
    }
    assert retried == {str(code) for code in exitcodes.RETRIED_EXIT_CODES}
    assert strategy["EvaluateOnExit"][-1] == {"OnExitCode": "*", "Action": "EXIT"}


@pytest.mark.parametrize(("logical", "action"), [("RenderJobDefinition", "render"), ("StitchJobDefinition", "stitch")])
def test_named_worker_faults_meet_the_retry_strategy(template: dict[str, Any], logical: str, action: str) -> None:
    """A full disk is retried (elsewhere); S3 refusing the role is not; a corrupt frame is re-rendered by a retry of
    the render, but the stitch would meet the same frames again."""
    strategy = template["Resources"][logical]["Properties"]["RetryStrategy"]
    reason = "Essential container in task exited"
    expected = {
        NoSpace: "RETRY",
        AccessDenied: "EXIT",
        CorruptFrame: "RETRY" if action == "render" else "EXIT",
        RenderFailed: "EXIT",
    }
    decided = {cls: retry_decision(strategy, worker_cli.exit_code_for(action, cls("x")), reason) for cls in expected}
    assert decided == expected
    assert NoSpace.exit_code in exitcodes.RETRIED_EXIT_CODES
    assert AccessDenied.exit_code not in exitcodes.RETRIED_EXIT_CODES


@pytest.mark.parametrize("logical", ["RenderJobDefinition", "StitchJobDefinition"])
def test_job_definitions_run_the_worker_command(template: dict[str, Any], logical: str) -> None:
    properties = template["Resources"][logical]["Properties"]
    container = properties["ContainerProperties"]
    assert container["Command"] == WORKER_COMMAND
    assert properties["Timeout"]["AttemptDurationSeconds"]
    kinds = [item["Type"] for item in container["ResourceRequirements"] if isinstance(item, dict) and "Type" in item]
    assert {"VCPU", "MEMORY"} <= set(kinds)
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "LogGroup"}


def test_render_job_uses_its_vcpus_and_the_gpu_when_asked(template: dict[str, Any]) -> None:
    container = template["Resources"]["RenderJobDefinition"]["Properties"]["ContainerProperties"]
    environment = {item["Name"]: item["Value"] for item in container["Environment"] if "Name" in item}
    assert environment["RENDER_THREADS"] == {"Ref": "JobVcpus"}
    assert environment["RENDER_DEVICE"] == {"Fn::If": ["UseGpu", "GPU", "CPU"]}
    assert {"Fn::If": ["UseGpu", {"Type": "GPU", "Value": "1"}, {"Ref": "AWS::NoValue"}]} in container[
        "ResourceRequirements"
    ]
    assert template["Conditions"]["UseGpu"] == {"Fn::Equals": [{"Ref": "ComputeType"}, "GPU"]}


def test_gpu_render_job_gets_the_graphics_and_compute_driver_libraries(template: dict[str, Any]) -> None:
    """OptiX needs the NVIDIA runtime's graphics libraries too; the GPU ids stay ECS's to assign."""
    container = template["Resources"]["RenderJobDefinition"]["Properties"]["ContainerProperties"]
    gpu_only = [item["Fn::If"] for item in container["Environment"] if "Fn::If" in item]
    (capabilities,) = [when for condition, when, _ in gpu_only if when["Name"] == "NVIDIA_DRIVER_CAPABILITIES"]
    assert {"graphics", "compute", "utility"} <= set(capabilities["Value"].split(","))
    assert [(condition, otherwise) for condition, _, otherwise in gpu_only] == [("UseGpu", {"Ref": "AWS::NoValue"})]
    names = {item.get("Name") for item in container["Environment"]}
    assert "NVIDIA_VISIBLE_DEVICES" not in names | {when["Name"] for _, when, _ in gpu_only}


def test_every_job_definition_has_an_attempt_time_limit(template: dict[str, Any]) -> None:
    definitions = {
        logical: resource["Properties"]
        for logical, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Batch::JobDefinition"
    }
    assert set(definitions) == {"RenderJobDefinition", "StitchJobDefinition"}
    assert definitions["RenderJobDefinition"]["Timeout"] == {"AttemptDurationSeconds": {"Ref": "JobTimeoutSeconds"}}
    assert template["Parameters"]["JobTimeoutSeconds"]["Default"] == 14400  # 240 minutes
    assert 60 <= definitions["StitchJobDefinition"]["Timeout"]["AttemptDurationSeconds"] <= 3600
    # Batch's own minimum attempt duration is 60 seconds.
    assert template["Parameters"]["JobTimeoutSeconds"]["MinValue"] >= 60


def test_frame_counter_has_a_time_limit(template: dict[str, Any]) -> None:
    timeout = template["Resources"]["FrameCounterFunction"]["Properties"].get("Timeout")
    assert isinstance(timeout, int) and 60 <= timeout <= 900


def test_queue_cancels_jobs_that_cannot_get_capacity(template: dict[str, Any]) -> None:
    queues = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Batch::JobQueue"]
    assert queues
    for queue in queues:
        actions = {action["Reason"]: action for action in queue["JobStateTimeLimitActions"]}
        assert set(actions) == {
            "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
            "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
            "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
        }
        for action in actions.values():
            assert action["State"] == "RUNNABLE" and action["Action"] == "CANCEL"
        assert actions["CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"]["MaxTimeSeconds"] == {"Ref": "CapacityWaitSeconds"}
        # The reason the explain step (NoCapacity), the client and the local cloud recognise.
        assert BATCH_CAPACITY_REASON in actions
    wait = template["Parameters"]["CapacityWaitSeconds"]
    assert wait["Type"] == "Number" and wait["Default"] == 1800
    assert wait["MinValue"] == 600 and wait["MaxValue"] == 86400  # Batch's bounds for maxTimeSeconds


def test_state_machine_substitutions_match_the_definition(template: dict[str, Any]) -> None:
    properties = template["Resources"]["RenderStateMachine"]["Properties"]
    assert properties["DefinitionUri"] == "statemachine/render.asl.json"
    used = set(re.findall(r"\$\{(\w+)\}", ASL.read_text(encoding="utf-8")))
    assert used == set(properties["DefinitionSubstitutions"]) == set(DUMMY_SUBSTITUTIONS)
    assert properties["Tracing"] == {"Enabled": True}
    assert properties["Logging"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"] == {
        "Fn::GetAtt": ["StateMachineLogGroup", "Arn"]
    }


def test_frame_counter_function(template: dict[str, Any]) -> None:
    properties = template["Resources"]["FrameCounterFunction"]["Properties"]
    assert properties["CodeUri"] == "lambda/frame_counter/"
    assert properties["Handler"] == "app.handler"
    assert template["Globals"]["Function"]["Runtime"] in ("python3.12", "python3.13")
    assert properties["MemorySize"] >= 1024 and properties["EphemeralStorage"]["Size"] == 10240
    assert {
        "BUCKET_NAME",
        "JOB_QUEUE_ARN",
        "RENDER_JOB_DEFINITION_ARN",
        "STITCH_JOB_DEFINITION_ARN",
        "MAX_VCPUS",
        "JOB_VCPUS",
        "POWERTOOLS_SERVICE_NAME",
    } <= set(properties["Environment"]["Variables"])
    requirements = (ROOT / "lambda" / "frame_counter" / "requirements.txt").read_text()
    assert "aws-lambda-powertools==" in requirements
    # Built by makefiles (no python3.12 or Docker needed): the handler's folder, and the contract as a layer.
    assert template["Resources"]["FrameCounterFunction"]["Metadata"]["BuildMethod"] == "makefile"
    assert properties["Layers"] == [{"Ref": "ContractLayer"}]
    layer = template["Resources"]["ContractLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion" and layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["ContentUri"] == "contract/"
    assert layer["Properties"]["CompatibleRuntimes"] == [template["Globals"]["Function"]["Runtime"]]
    assert layer["Properties"]["CompatibleArchitectures"] == template["Globals"]["Function"]["Architectures"]
    assert not (ROOT / "lambda" / "frame_counter" / "render_on_aws").exists(), "the add-on must not ship in it"


def test_outputs_the_clients_need(template: dict[str, Any]) -> None:
    assert set(template["Outputs"]) >= REQUIRED_OUTPUTS


def test_local_cloud_can_resolve_what_it_reads(template: dict[str, Any]) -> None:
    """The local cloud resolves only some intrinsics: keep the resources it provisions within them."""
    read = [template["Resources"][logical].get("Properties", {}) for logical in LOCAL_CLOUD_RESOURCES]
    read += [template["Globals"], template["Outputs"]]
    read += [spec.get("Default") for spec in template["Parameters"].values()]
    conditions = set()
    for key, argument in intrinsics(read):
        assert key in LOCAL_CLOUD_FUNCTIONS, f"{key} is not resolved by localcloud/cfn.py"
        if key == "Fn::If":
            conditions.add(argument[0])
        names = [argument] if key == "Ref" else re.findall(r"\$\{([^}!]+)\}", render({key: argument}))
        for name in names if key in ("Ref", "Fn::Sub") else []:
            head = name.split(".")[0]
            assert name in LOCAL_CLOUD_PSEUDO or head in template["Resources"] or head in template["Parameters"], name
    for name in conditions | {res.get("Condition") for res in template["Resources"].values()} - {None}:
        for key, _ in intrinsics(template["Conditions"][name]):
            assert key in LOCAL_CLOUD_FUNCTIONS, f"condition {name} uses {key}"


def test_two_stacks_can_live_side_by_side(template: dict[str, Any]) -> None:
    for logical, resource in template["Resources"].items():
        for key, value in resource.get("Properties", {}).items():
            if key in PHYSICAL_NAME_PROPERTIES:
                # A name of the stack's own resource (a permission on its function) is as unique as the resource.
                names_own = isinstance(value, dict) and (
                    value.get("Ref") in template["Resources"]
                    or (value.get("Fn::GetAtt") or [None])[0] in template["Resources"]
                )
                assert names_own or (isinstance(value, dict) and "${AWS::StackName}" in render(value)), (
                    f"{logical}.{key} is fixed"
                )


# ---- security -----------------------------------------------------------------------------------------------------
def test_bucket_is_private_encrypted_and_expires_job_data(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["RenderBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values()) and len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    rules = bucket["LifecycleConfiguration"]["Rules"]
    jobs = [rule for rule in rules if rule.get("Prefix") == "jobs/"]
    assert jobs and jobs[0]["ExpirationInDays"] == {"Ref": "KeepJobDataDays"}
    assert any(rule.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 1} for rule in rules)
    if bucket.get("VersioningConfiguration", {}).get("Status") == "Enabled":
        assert any("NoncurrentVersionExpiration" in rule for rule in rules)


def test_bucket_denies_requests_without_tls(template: dict[str, Any]) -> None:
    policy = template["Resources"]["RenderBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "RenderBucket"}
    denials = [
        statement
        for statement in as_list(policy["PolicyDocument"]["Statement"])
        if statement["Effect"] == "Deny"
        and statement["Principal"] == "*"
        and statement["Action"] == "s3:*"
        and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert denials
    assert {render(resource) for resource in denials[0]["Resource"]} == {"${RenderBucket.Arn}", "${RenderBucket.Arn}/*"}


def test_no_wildcard_actions(translated: dict[str, Any]) -> None:
    for logical, statement in allow_statements(translated):
        for action in as_list(statement.get("Action", [])):
            assert "*" not in action, f"{logical}: {action}"
        assert "NotAction" not in statement and "NotResource" not in statement, logical


def test_only_expected_managed_policies(translated: dict[str, Any]) -> None:
    attached = set()
    for resource in translated["Resources"].values():
        for arn in resource.get("Properties", {}).get("ManagedPolicyArns", []):
            attached.add(render(arn).rsplit("/", 1)[-1])
    assert attached <= ALLOWED_MANAGED_POLICIES, attached - ALLOWED_MANAGED_POLICIES


def conditional_branches(values: list[Any]) -> list[Any]:
    """Resources with each ``Fn::If`` replaced by its branches (less ``AWS::NoValue``): every branch is checked."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, dict) and "Fn::If" in value:
            out += [b for b in value["Fn::If"][1:] if b != {"Ref": "AWS::NoValue"}]
        else:
            out.append(value)
    return out


def test_allowed_resources_are_the_stacks_own(translated: dict[str, Any]) -> None:
    for logical, statement in allow_statements(translated):
        actions = as_list(statement["Action"])
        for resource in map(render, conditional_branches(as_list(statement["Resource"]))):
            if resource == "*":
                assert set(actions) <= ACTIONS_WITHOUT_RESOURCES, f"{logical}: {actions} on *"
                continue
            for action in actions:
                scopes = SCOPES[action.split(":")[0]]
                assert resource.startswith(scopes), f"{logical}: {action} on {resource}"


ARTIST_TAG = "${!aws:PrincipalTag/render-artist}"
EXECUTIONS = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${RenderStateMachine.Name}:"
STACK_ARN = "arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/${AWS::StackName}/*"


def policy_grants(template: dict[str, Any], logical: str, effect: str = "Allow") -> set[tuple[str, str]]:
    document = template["Resources"][logical]["Properties"]["PolicyDocument"]
    return {
        (action, render(resource))
        for statement in as_list(document["Statement"])
        if statement["Effect"] == effect
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }


def policy_statement(template: dict[str, Any], logical: str, sid: str) -> dict[str, Any]:
    document = template["Resources"][logical]["Properties"]["PolicyDocument"]
    (statement,) = [statement for statement in as_list(document["Statement"]) if statement.get("Sid") == sid]
    return statement


def test_artist_policy_grants_exactly_the_artist_workflow(template: dict[str, Any]) -> None:
    assert policy_grants(template, "ArtistPolicy") == {
        ("s3:GetObject", "${RenderBucket.Arn}/cas/*"),
        ("s3:GetObject", "${RenderBucket.Arn}/jobs/*"),
        ("s3:PutObject", "${RenderBucket.Arn}/cas/sha256/*"),
        ("s3:PutObject", "${RenderBucket.Arn}/jobs/" + ARTIST_TAG + "-*/manifest.json"),
        ("s3:ListBucket", "${RenderBucket.Arn}"),
        ("states:StartExecution", "${RenderStateMachine}"),
        ("states:DescribeExecution", EXECUTIONS + "*"),
        ("states:GetExecutionHistory", EXECUTIONS + "*"),
        ("states:StopExecution", EXECUTIONS + ARTIST_TAG + "-*"),
        ("batch:DescribeJobs", "*"),
        ("batch:ListJobs", "*"),
        ("cloudformation:DescribeStacks", STACK_ARN),
    }


def test_artists_write_and_stop_only_their_own_jobs(template: dict[str, Any]) -> None:
    """Own jobs are those whose id starts with the principal's render-artist tag and "-"; the rest is read-only."""
    own_prefix = re.compile(r"^[A-Za-z0-9]+-")
    assert ids.is_job_id("ann-shot_010-20250101-120000-abc123") and own_prefix.match("ann-shot")
    writes = {resource for action, resource in policy_grants(template, "ArtistPolicy") if action == "s3:PutObject"}
    for resource in writes - {"${RenderBucket.Arn}/cas/sha256/*"}:
        assert resource.startswith("${RenderBucket.Arn}/jobs/" + ARTIST_TAG + "-"), resource
    stops = {
        resource for action, resource in policy_grants(template, "ArtistPolicy") if action == "states:StopExecution"
    }
    assert stops == {EXECUTIONS + ARTIST_TAG + "-*"}
    # The pipeline's outputs stay the pipeline's, whatever else is granted.
    denied = policy_grants(template, "ArtistPolicy", "Deny")
    pipeline_keys = ("job.json", "frames/*", "errors/*", "failed/*", "previews/*")
    for key in [f"jobs/*/{name}" for name in pipeline_keys] + ["jobs/*.mp4"]:
        assert ("s3:PutObject", "${RenderBucket.Arn}/" + key) in denied, key
    ambiguous = policy_statement(template, "ArtistPolicy", "DenyAmbiguousArtistTags")
    assert ambiguous["Effect"] == "Deny"
    assert set(ambiguous["Condition"]["StringLike"]["aws:PrincipalTag/render-artist"]) == {"*-*", "*/*"}
    assert {"s3:PutObject", "states:StartExecution", "states:StopExecution"} <= set(ambiguous["Action"])


@pytest.mark.parametrize("logical", ["ArtistPolicy", "AdminPolicy"])
def test_people_list_only_the_stacks_prefixes(template: dict[str, Any], logical: str) -> None:
    (listing,) = [
        s
        for s in as_list(template["Resources"][logical]["Properties"]["PolicyDocument"]["Statement"])
        if "s3:ListBucket" in as_list(s["Action"])
    ]
    assert listing["Effect"] == "Allow" and render(listing["Resource"]) == "${RenderBucket.Arn}"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["cas/*", "jobs/*"]}}  # no IfExists


def test_admin_policy_sees_and_stops_everything(template: dict[str, Any]) -> None:
    assert template["Resources"]["AdminPolicy"]["Type"] == "AWS::IAM::ManagedPolicy"
    assert policy_grants(template, "AdminPolicy", "Deny") == set()
    grants = policy_grants(template, "AdminPolicy")
    for action in ("states:DescribeExecution", "states:GetExecutionHistory", "states:StopExecution"):
        assert (action, EXECUTIONS + "*") in grants
    assert ("states:ListExecutions", "${RenderStateMachine}") in grants
    assert ("s3:PutObject", "${RenderBucket.Arn}/jobs/*/manifest.json") in grants
    assert not any(action == "s3:PutObject" and resource.endswith("/jobs/*") for action, resource in grants)
    assert template["Outputs"]["AdminPolicyArn"]["Value"] == {"Ref": "AdminPolicy"}


def test_state_machine_can_stop_the_jobs_it_started(translated: dict[str, Any]) -> None:
    statements = [s for logical, s in allow_statements(translated) if logical == "RenderStateMachineRole"]
    actions = {action for statement in statements for action in as_list(statement["Action"])}
    assert {"batch:SubmitJob", "batch:DescribeJobs", "batch:TerminateJob", "lambda:InvokeFunction"} <= actions
    assert {"events:PutTargets", "events:PutRule", "events:DescribeRule"} <= actions
    batch_on_everything = {
        action
        for statement in statements
        for action in as_list(statement["Action"])
        if action.startswith("batch:") and "*" in map(render, as_list(statement["Resource"]))
    }
    assert batch_on_everything == {"batch:DescribeJobs"}
    (terminate,) = [s for s in statements if "batch:TerminateJob" in as_list(s["Action"])]
    assert {render(r) for r in as_list(terminate["Resource"])} == {
        "arn:${AWS::Partition}:batch:${AWS::Region}:${AWS::AccountId}:job/*"
    }


def test_job_role_reads_cas_and_jobs_and_writes_only_jobs(template: dict[str, Any]) -> None:
    statements = template["Resources"]["JobRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    for statement in statements:
        resources = {render(resource) for resource in as_list(statement["Resource"])}
        if any(action.startswith("s3:Put") for action in as_list(statement["Action"])):
            assert resources == {"${RenderBucket.Arn}/jobs/*"}
        else:
            allowed = {"${RenderBucket.Arn}/cas/*", "${RenderBucket.Arn}/jobs/*", "${RenderBucket.Arn}"}
            assert resources <= allowed | {"${RenderBucket.Arn}/jobs/*/failed/*"}
            if "s3:DeleteObject" in as_list(statement["Action"]):  # only a frame's failure record, once it renders
                assert resources == {"${RenderBucket.Arn}/jobs/*/failed/*"}


def test_spot_drill_targets_only_this_stacks_instances(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    stack_tag = {"render-on-aws:stack": {"Ref": "AWS::StackName"}}
    assert resources["SpotComputeEnvironment"]["Properties"]["ComputeResources"]["Tags"] == stack_tag
    experiment = resources["FisExperimentTemplate"]["Properties"]
    (target,) = experiment["Targets"].values()
    assert target["ResourceType"] == "aws:ec2:spot-instance" and target["ResourceTags"] == stack_tag
    assert [action["ActionId"] for action in experiment["Actions"].values()] == [
        "aws:ec2:send-spot-instance-interruptions"
    ]
    assert experiment["StopConditions"][0]["Source"] == "aws:cloudwatch:alarm"
    (interrupt,) = [
        statement
        for policy in resources["FisRole"]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if statement["Action"] == "ec2:SendSpotInstanceInterruptions"
    ]
    assert interrupt["Condition"] == {
        "StringEquals": {"aws:ResourceTag/render-on-aws:stack": {"Ref": "AWS::StackName"}}
    }


def test_spot_compute_environment(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    compute = resources["SpotComputeEnvironment"]["Properties"]["ComputeResources"]
    assert compute["Type"] == "SPOT" and compute["AllocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert compute["MinvCpus"] == 0
    assert len(template["Parameters"]["CpuInstanceTypes"]["Default"].split(",")) >= 3
    assert set(template["Parameters"]["GpuInstanceTypes"]["Default"].split(",")) <= {"g5", "g6", "g6e"}
    group = resources["WorkerSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group and group["SecurityGroupEgress"]
    launch = resources["WorkerLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert launch["MetadataOptions"]["HttpTokens"] == "required"


def test_the_clients_keys_and_execution_names_fall_under_the_artists_own_grants(template: dict[str, Any]) -> None:
    """What the client writes and stops (ids.new_job_id with the artist tag) is what ArtistPolicy lets that artist
    write and stop, and never what it lets another artist do."""
    from render_contract import layout

    def grants_for(artist: str, action: str) -> set[str]:
        return {
            resource.replace(ARTIST_TAG, artist)
            for granted, resource in policy_grants(template, "ArtistPolicy")
            if granted == action and ARTIST_TAG in resource
        }

    job_id = ids.new_job_id("Shot 010, take 2", artist="alice")
    manifest = "${RenderBucket.Arn}/" + layout.manifest_key(job_id)
    execution = EXECUTIONS + job_id
    for artist, allowed in (("alice", True), ("bob", False), ("ali", False)):
        writes, stops = grants_for(artist, "s3:PutObject"), grants_for(artist, "states:StopExecution")
        assert writes and stops
        assert any(fnmatch.fnmatchcase(manifest, pattern) for pattern in writes) is allowed, artist
        assert any(fnmatch.fnmatchcase(execution, pattern) for pattern in stops) is allowed, artist
    with pytest.raises(ids.InvalidInput):
        ids.new_job_id("x", artist="al-ice")  # a '-' in the tag would let "al" match "al-ice"'s jobs


def test_every_task_of_the_state_machine_has_a_time_limit() -> None:
    definition = json.loads((ROOT / "statemachine" / "render.asl.json").read_text())
    tasks = {name: state for name, state in definition["States"].items() if state["Type"] == "Task"}
    assert tasks and all(state.get("TimeoutSeconds", 0) > 0 for state in tasks.values())
    assert all("HeartbeatSeconds" not in state for state in tasks.values())  # Batch sends no heartbeats


# ---- the worker image, built during the deploy (issue 18) ---------------------------------------------------------
@pytest.mark.parametrize("logical", ["RenderJobDefinition", "StitchJobDefinition"])
def test_job_definitions_exist_only_with_a_built_image(template: dict[str, Any], logical: str) -> None:
    """A job definition takes its image from the WorkerImage custom resource, so CloudFormation creates it (and the
    state machine naming it) only after the resource answered that the image is in the repository."""
    image = template["Resources"][logical]["Properties"]["ContainerProperties"]["Image"]
    assert image == {
        "Fn::If": ["UseStackRepository", {"Fn::GetAtt": ["WorkerImage", "ImageUri"]}, {"Ref": "WorkerImageUri"}]
    }


def test_worker_image_resource_runs_the_stacks_build(translated: dict[str, Any]) -> None:
    resources = translated["Resources"]
    image = resources["WorkerImage"]
    assert image["Condition"] == "UseStackRepository"
    props = image["Properties"]
    assert props["ServiceToken"] == {"Fn::GetAtt": ["WorkerImageFunction", "Arn"]}
    assert props["Project"] == {"Ref": "WorkerImageProject"}
    assert props["ImageTag"] == {"Ref": "WorkerImageTag"}
    assert props["ServiceTimeout"] > 15 * 60, "a first build takes 10-15 minutes, longer than one Lambda call"
    # The function's version changes with its package (which carries the build context): that update makes the
    # resource compare the context with the repository again.
    version = props["FunctionVersion"]["Ref"]
    assert resources[version]["Type"] == "AWS::Lambda::Version"
    function = resources["WorkerImageFunction"]["Properties"]
    assert function["Timeout"] == 900
    permission = resources["WorkerImageFunctionSelfInvoke"]["Properties"]
    assert permission["Principal"] == {"Fn::GetAtt": ["WorkerImageFunctionRole", "Arn"]}
    assert permission["FunctionName"] == {"Fn::GetAtt": ["WorkerImageFunction", "Arn"]}


def test_the_worker_image_function_builds_only_this_stacks_image(translated: dict[str, Any]) -> None:
    statements = [s for logical, s in allow_statements(translated) if logical == "WorkerImageFunctionRole"]
    granted = {action: render(s["Resource"]) for s in statements for action in as_list(s["Action"])}
    assert granted["codebuild:StartBuild"] == "${WorkerImageProject.Arn}"
    assert granted["ecr:PutImage"] == "${WorkerRepository.Arn}"
    assert granted["s3:PutObject"] == "${RenderBucket.Arn}/build/*"
