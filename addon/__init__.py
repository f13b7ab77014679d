"""Render on AWS: a Blender extension that renders the open file on AWS Batch Spot and brings the video back.

This module must not import bpy at import time: ``render_on_aws.core`` (the command line, the tests) is
imported without Blender. The Blender modules are imported inside :func:`register`.
"""

from __future__ import annotations

MODULES = ("properties", "preferences", "operators", "panels", "runtime")
"""Registered in this order, unregistered in reverse (the panel uses the operators and properties)."""


def _modules() -> list:
    import importlib

    return [importlib.import_module(f"{__package__}.{name}") for name in MODULES]


def register() -> None:
    for module in _modules():
        module.register()


def unregister() -> None:
    for module in reversed(_modules()):
        module.unregister()
