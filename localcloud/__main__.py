"""``python -m localcloud``: serve the embedded local cloud on 127.0.0.1 until SIGINT/SIGTERM.

The first line of standard output is one JSON object: ``{"endpoint", "region", "stack", "outputs", ...}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from .cloud import CAPACITY_CHOICES, LocalCloud, run_forever


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m localcloud", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel Batch jobs (default: cores)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--stack", default="render-on-aws", help="name of the registered stack")
    parser.add_argument("--state-dir", type=Path, help="where job and Lambda logs go (default: a temp folder)")
    parser.add_argument(
        "--capacity",
        choices=CAPACITY_CHOICES,
        default="all",
        help="which Batch queues can get instances: none starts no job (jobs wait RUNNABLE until the queue cancels "
        "them); on-demand only queues with an On-Demand compute environment (default: all)",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter of the local stack, e.g. CapacityFallback=on-demand (repeatable)",
    )
    parser.add_argument(
        "--capacity-wait-seconds", type=int, help="the stack's CapacityWaitSeconds (default: the template's)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="localcloud %(levelname)s %(name)s: %(message)s")
    for noisy in ("werkzeug", "botocore", "urllib3", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="localcloud-"))
    cloud = LocalCloud(
        state_dir,
        port=args.port,
        workers=args.workers,
        region=args.region,
        stack_name=args.stack,
        capacity=args.capacity,
        parameters=dict(item.split("=", 1) for item in args.parameter),
        capacity_wait_seconds=args.capacity_wait_seconds,
    )
    run_forever(cloud)


if __name__ == "__main__":
    main()
