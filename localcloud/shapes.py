"""Converts CloudFormation/ASL-style PascalCase structures to an AWS API's own casing, guided by botocore.

CloudFormation properties and Step Functions task parameters name fields ``JobName`` and ``RetryStrategy``;
the Batch API wants ``jobName`` and ``retryStrategy``. Walking botocore's service model (not a hand-made map)
keeps map keys (like Batch ``parameters``) untouched and coerces numbers and booleans that templates carry as
strings.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StructureShape


@cache
def _service_model(service: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(service)


def input_shape(service: str, operation: str) -> StructureShape:
    return _service_model(service).operation_model(operation).input_shape


def output_shape(service: str, operation: str) -> StructureShape:
    return _service_model(service).operation_model(operation).output_shape


def to_api(value: Any, shape: Shape) -> Any:
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        members = {name.lower(): name for name in shape.members}
        converted = {}
        for key, item in value.items():
            name = members.get(key.lower())
            if name is None:
                continue  # a template-only property (e.g. CloudFormation's Tags format): not part of the API call
            converted[name] = to_api(item, shape.members[name])
        return converted
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [to_api(item, shape.member) for item in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {key: to_api(item, shape.value) for key, item in value.items()}
    if shape.type_name in ("integer", "long") and isinstance(value, str):
        return int(value)
    if shape.type_name in ("double", "float") and isinstance(value, str):
        return float(value)
    if shape.type_name == "boolean" and isinstance(value, str):
        return value.lower() == "true"
    if shape.type_name == "string" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def call_args(service: str, operation: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``client.<operation>`` built from PascalCase properties."""
    return to_api(properties, input_shape(service, operation))
