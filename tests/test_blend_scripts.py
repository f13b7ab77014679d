"""What needs Python in a .blend (registered text blocks, drivers that are no simple expression), read with BAT
from files real bpy wrote; the classifier checked against Blender's own ``ChannelDriver.is_simple_expression``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import BLENDFILES, ROOT, make_scene
from tests.reliability.support import bpy_edit

sys.path.insert(0, str(ROOT / "lambda" / "frame_counter"))


@pytest.fixture(scope="module")
def facts() -> ModuleType:
    import blend_facts

    return blend_facts


SIMPLE = [
    "frame * 2",
    "var + 1",
    "sin(frame / 10) * var + 1.5",
    "var if frame > 10 else -var",
    "1 if var else 2 if frame else 3",
    "var < 1 and not var or frame == 3",
    "1 < var < 2",
    "-(-var)",
    "+var * -1",
    "1e3 + .5 - 1. + 1.5e-3",
    "pi * True - False",
    "((frame))",
    "  frame  ",
    "frame\t* 2",
    "fabs(var) + abs(var) + floor(var) + ceil(var) + trunc(var) + round(var) + int(var)",
    "radians(90) + degrees(1) + sqrt(4) + exp(1) + log(2) + log(2, 3)",
    "asin(1) + acos(1) + atan(1) + atan2(1, 2) + tan(1) + cos(1)",
    "pow(2, 3) + fmod(var, 2) + min(1) + max(1, 2, 3, 4)",
    "clamp(var) + clamp(var, 0, 1) + lerp(0, 1, var) + smoothstep(0, 1, var)",
]
NOT_SIMPLE = [
    "bpy.context.scene.frame_current * 2",
    '__import__("os").getpid()',
    "(lambda: 3.0)()",
    "unknown * 2",
    "var2",
    "self",
    "var[0]",
    "'a'",
    "var ** 2",
    "var % 3",
    "var // 2",
    "ln(2)",
    "signum(var)",
    "log10(1)",
    "hypot(1, 2)",
    "noise(1)",
    "sin",
    "min()",
    "sin(1, 2)",
    "atan2(1)",
    "clamp(1, 2)",
    "lerp(1, 2)",
    "max(1, 2,)",
    "(1, 2)",
    "0x10",
    "1_000",
    "1 & 2",
    "~1",
    "e",
    "inf",
    "None",
    "frame *",
    "1 is 1",
]


@pytest.mark.parametrize("expression", SIMPLE)
def test_simple_expressions_need_no_python(facts: ModuleType, expression: str) -> None:
    assert facts.needs_python(expression, frozenset({"var"})) is False


@pytest.mark.parametrize("expression", NOT_SIMPLE)
def test_everything_else_needs_python(facts: ModuleType, expression: str) -> None:
    assert facts.needs_python(expression, frozenset({"var"})) is True


def test_empty_expression_needs_nothing(facts: ModuleType) -> None:
    assert facts.needs_python("", frozenset()) is False


def test_classifier_agrees_with_blender(facts: ModuleType) -> None:
    """bpy's own ``is_simple_expression`` (driver with one variable ``var``) decides, for every expression above."""
    script = (
        "import bpy, json, sys\n"
        "ob = bpy.data.objects['Cube']\n"
        "d = ob.driver_add('location', 0).driver; d.type = 'SCRIPTED'; d.variables.new().name = 'var'\n"
        "out = {}\n"
        "for e in json.loads(sys.argv[1]):\n"
        "    d.expression = e; out[e] = d.is_simple_expression\n"
        "print('RESULT' + json.dumps(out))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(SIMPLE + NOT_SIMPLE)],
        check=True, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    blender = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))[6:])
    ours = {e: not facts.needs_python(e, frozenset({"var"})) for e in SIMPLE + NOT_SIMPLE}
    assert ours == blender


SCRIPTED = """
text = bpy.data.texts.new('rig_ui.py'); text.write('x = 1'); text.use_module = True
bpy.data.texts.new('notes.txt').write('not code')
cube = next(obj for obj in scene.objects if obj.type == 'MESH')
simple = cube.driver_add('location', 0).driver; simple.type = 'SCRIPTED'; simple.expression = 'frame * 2'
full = cube.driver_add('location', 2).driver; full.type = 'SCRIPTED'
full.expression = 'bpy.context.scene.frame_current * 2'
average = cube.driver_add('rotation_euler', 1).driver; average.type = 'AVERAGE'
power = scene.driver_add('audio_volume').driver; power.type = 'SCRIPTED'; power.expression = '__import__("os").getpid()'
material = bpy.data.materials.new('Paint'); material.use_nodes = True; cube.data.materials.append(material)
value = material.node_tree.nodes.new('ShaderNodeValue'); value.name = 'Knob'
knob = value.outputs[0].driver_add('default_value').driver; knob.type = 'SCRIPTED'
knob.expression = 'bpy.app.version[0]'
"""


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scripted")
    scene = make_scene(folder / "plain.blend", "--frame-end", "3", "--resolution", "64", "36")
    return bpy_edit(scene, SCRIPTED, folder / "scripted.blend")


def test_only_registered_text_blocks_are_named(facts: ModuleType, scripted: Path) -> None:
    assert facts.read_facts(scripted).python.scripts == ("rig_ui.py",)


def test_python_drivers_are_named_with_their_id_path_and_expression(facts: ModuleType, scripted: Path) -> None:
    found = facts.read_facts(scripted)
    scene, cube = found.scene.name, "Scene-cube"
    assert sorted(found.python.drivers) == sorted(
        [
            f"{cube}: location[2] = bpy.context.scene.frame_current * 2",
            f'{scene}: audio_volume[0] = __import__("os").getpid()',
            'Paint node tree: nodes["Knob"].outputs[0].default_value[0] = bpy.app.version[0]',
        ]
    )
    assert len(found.python_use) == 4


def test_a_plain_file_needs_no_python(facts: ModuleType, tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "plain.blend", "--frame-end", "3", "--resolution", "64", "36")
    assert facts.read_facts(scene).python == facts.PythonUse()


@pytest.mark.parametrize(
    "name", ["v279_raw.blend", "v279_gzip.blend", "v293_raw_geometry_nodes.blend", "v301_zstd.blend"]
)
def test_old_files_read_and_need_no_python(facts: ModuleType, name: str) -> None:
    assert facts.read_facts(BLENDFILES / name).python == facts.PythonUse()
