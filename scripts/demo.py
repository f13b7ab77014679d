"""``make demo``: renders the demo scene through the real pipeline on the embedded local cloud.

Makes the demo scene with bpy (48 frames, a cube crossing the frame, Cycles), starts ``python -m localcloud``,
submits with the same command line an admin or a script would use
(``render-on-aws submit SCENE.blend --wait --download out/``), stops the cloud and prints the MP4's path.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localcloud import process as localcloud  # noqa: E402
from scripts import demo_scene  # noqa: E402

OUT = ROOT / "out"
DEMO_SCENE = ("--frame-end", "48", "--samples", "32")
"""48 frames, 320x180, Cycles at 32 samples: about 1.5 s a frame on one core, well under a minute on 2 cores."""
SCENE = OUT / "demo" / "demo.blend"


def main() -> int:
    if not SCENE.exists():
        print(f"making the demo scene {SCENE.relative_to(ROOT)} with bpy", file=sys.stderr)
        demo_scene.make(SCENE, *DEMO_SCENE)
    print("starting the embedded local cloud", file=sys.stderr)
    cloud = localcloud.start(OUT / "demo" / "localcloud")
    print(f"local cloud at {cloud.endpoint}, stack {cloud.stack!r}", file=sys.stderr)
    try:
        command = cloud.cli_command("submit", str(SCENE), "--wait", "--download", str(OUT))
        print("$ render-on-aws " + " ".join(command[1:]), file=sys.stderr)
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=cloud.client_environment())
    finally:
        cloud.stop()
    if result.returncode != 0:
        print(f"the demo failed; local cloud logs are in {cloud.state_dir}", file=sys.stderr)
        return result.returncode
    video = Path(result.stdout.split()[-1])
    print(video.relative_to(ROOT) if video.is_relative_to(ROOT) else video)
    return 0


if __name__ == "__main__":
    sys.exit(main())
