"""Run ``meta_iteration.py`` over the grid the book's appendix plots, one JSON record per point.

The grid: the sinusoid setting with 1, 5 and 10 inner steps (25 tasks) and with 5 to 100
tasks (1 step), and the Omniglot setting with 1, 5 and 10 inner steps (32 tasks; few
rounds at 5 and 10 steps, where a round of every method takes about a minute); every
point also measures peak memory. With ``--peers`` (run it with the peers' environment, see
``benchmarks/peers/README.md``) every point also runs higher, torchopt and learn2learn.

Run from the repository root::

    benchmarks/.venv-peers/bin/python benchmarks/sweep.py --peers --out benchmarks/results/sweep_cpu

The records are named ``<setting>_steps<S>_tasks<T>.json``; a point whose record exists
is skipped unless ``--again`` is given, so an interrupted sweep can be resumed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import meta_iteration


class Point(NamedTuple):
    """One run of the benchmark: its setting, inner steps, tasks and timed rounds."""

    setting: str
    inner_steps: int
    meta_batch_size: int
    repeats: int


GRID = (
    Point("sinusoid", 1, 25, 100),
    Point("sinusoid", 5, 25, 30),
    Point("sinusoid", 10, 25, 30),
    Point("sinusoid", 1, 5, 50),
    Point("sinusoid", 1, 10, 50),
    Point("sinusoid", 1, 50, 50),
    Point("sinusoid", 1, 100, 30),
    Point("omniglot", 1, 32, 10),
    Point("omniglot", 5, 32, 3),
    Point("omniglot", 10, 32, 3),
)


def record_name(point: Point) -> str:
    """The file a point's record is written to."""
    return f"{point.setting}_steps{point.inner_steps}_tasks{point.meta_batch_size}.json"


def main(argv: list[str] | None = None) -> int:
    """Run every point of ``GRID`` not yet recorded in ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON records")
    parser.add_argument("--peers", action="store_true", help="also run the peers where they import")
    parser.add_argument("--again", action="store_true", help="rerun points whose record exists")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    for point in GRID:
        path = args.out / record_name(point)
        if path.exists() and not args.again:
            print(f"skipping {path}: recorded (--again reruns it)")
            continue
        print(f"\n=== {point}", flush=True)
        command = [
            "--setting",
            point.setting,
            "--inner-steps",
            str(point.inner_steps),
            "--meta-batch-size",
            str(point.meta_batch_size),
            "--repeats",
            str(point.repeats),
            "--memory",
            "--json",
            str(path),
        ]
        if args.peers:
            command.append("--peers")
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        meta_iteration.main(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
