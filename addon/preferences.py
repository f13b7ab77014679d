"""Where jobs run: an AWS stack (profile, region, stack name) or the embedded local cloud (its endpoint URL).

No access key fields, on purpose: credentials come only from boto3's own chain (profile, SSO, environment),
so nothing secret is ever written to userpref.blend. The stack's outputs are looked up with DescribeStacks
and cached in memory only.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

from .core.connection import DEFAULT_STACK, ConnectionSettings

LOCAL_DEFAULT_ENDPOINT = "http://127.0.0.1:5000"


def _aws_profiles() -> list[str]:
    """Profiles of the local AWS config and credentials files (botocore reads them; no network)."""
    try:
        import botocore.session

        return sorted(botocore.session.Session().available_profiles)
    except Exception:  # a broken config file must not break the preferences
        return []


def _search_profiles(_self: object, _context: bpy.types.Context, text: str) -> list[str]:
    return [name for name in _aws_profiles() if text.lower() in name.lower()]


class RenderOnAwsPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    connection_kind: EnumProperty(
        name="Connection",
        items=(
            ("AWS", "AWS", "A Render on AWS stack in your AWS account"),
            ("LOCAL", "Local", "The embedded local cloud (python -m localcloud) on this machine"),
        ),
        default="AWS",
    )
    profile: StringProperty(
        name="Profile",
        description="AWS profile from your AWS config (empty: boto3's default chain: environment, SSO, default)",
        search=_search_profiles,
    )
    region: StringProperty(name="Region", description="AWS region of the stack (empty: the profile's region)")
    stack: StringProperty(name="Stack", description="Name of the CloudFormation stack", default=DEFAULT_STACK)
    artist: StringProperty(
        name="Artist tag",
        description="Your render-artist IAM tag (letters and digits), which your admin set: your job ids start with "
        "it, and the stack lets you change and stop only those jobs. Empty: no prefix (admins, the local cloud)",
    )
    endpoint: StringProperty(
        name="Endpoint",
        description='The endpoint URL that "python -m localcloud" prints on its first line',
        default=LOCAL_DEFAULT_ENDPOINT,
    )

    def connection_settings(self) -> ConnectionSettings:
        if self.connection_kind == "LOCAL":
            return ConnectionSettings(
                stack=self.stack or DEFAULT_STACK, endpoint=self.endpoint.strip() or None, artist=self.artist or None
            )
        return ConnectionSettings(
            stack=self.stack or DEFAULT_STACK,
            region=self.region.strip() or None,
            profile=self.profile.strip() or None,
            artist=self.artist.strip() or None,
        )

    def draw(self, context: bpy.types.Context) -> None:
        from . import runtime

        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "connection_kind", expand=True)
        if self.connection_kind == "AWS":
            layout.prop(self, "profile", icon="USER")
            layout.prop(self, "region")
            layout.prop(self, "artist", icon="USER")
        else:
            layout.prop(self, "endpoint")
        layout.prop(self, "stack")
        row = layout.row()
        row.operator("render.aws_test_connection", icon="URL")
        message = runtime.CONNECTION_MESSAGE
        if message.text:
            box = layout.box()
            icon = "CHECKMARK" if message.ok else ("ERROR" if message.ok is False else "SORTTIME")
            for index, line in enumerate(wrap(message.text)):
                box.label(text=line, icon=icon if index == 0 else "BLANK1")
        if self.connection_kind == "AWS":
            layout.label(text="Credentials come from your AWS profile, SSO login or environment; none are stored.")


def wrap(text: str, width: int = 90) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def get(context: bpy.types.Context | None = None) -> RenderOnAwsPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


CLASSES = (RenderOnAwsPreferences,)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
