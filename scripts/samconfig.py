"""Reads what `sam deploy --guided` saved in samconfig.toml, for the Makefile (make deploy, make worker-image).

    python scripts/samconfig.py [--config samconfig.toml] KEY    # prints the value or nothing; exit 0 either way

KEY is looked up as `sam deploy` would: [default.deploy.parameters] first, then [default.global.parameters]. Why a
script and not grep: the file is TOML that the SAM CLI rewrites (quoting, tables); tomllib reads it as SAM does.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (("default", "deploy", "parameters"), ("default", "global", "parameters"))


def lookup(config: dict[str, Any], key: str) -> str:
    for section in SECTIONS:
        table: Any = config
        for part in section:
            table = table.get(part, {}) if isinstance(table, dict) else {}
        if isinstance(table, dict) and table.get(key) not in (None, ""):
            return str(table[key])
    return ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "samconfig.toml")
    parser.add_argument("key")
    args = parser.parse_args(argv)
    if not args.config.is_file():
        return 0
    try:
        config = tomllib.loads(args.config.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        print(f"samconfig: {args.config} is not valid TOML: {error}", file=sys.stderr)
        return 2
    print(lookup(config, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
