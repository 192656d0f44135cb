"""Time the meta-iteration of two checkouts of mamlbook side by side, each call in a process of its own.

For one setting of ``meta_iteration.py`` (``--setting sinusoid`` or ``omniglot``) this
script times the ``maml_loss`` meta-iteration and the ``plain`` Adam step of an old and a
new checkout of the repository. Every timing is a process of its own: the checkout's
``benchmarks/meta_iteration.py --time-one METHOD``, run by this Python with
``PYTHONPATH`` set to the checkout (the folder holding its ``mamlbook/``), which prints
the time of each of its iterations; the process's median is one measurement. A round
runs one process for each checkout and method, the checkouts alternating (old, new, old,
new) and the order rotated by one from round to round, so that a slow spell of the shared
machine falls on both alike. Before the rounds, each checkout's ``meta_iteration.py
--memory`` runs once (its float64 meta-gradient check included) for the bytes autograd
saves in one ``maml_loss`` meta-iteration.

It prints, for each checkout, the median over its processes of ``maml_loss`` and of
``plain``, and ``maml_loss`` / ``plain``; and for each figure the ratio new / old, as a
ratio of medians and as the median of the per-round ratios (processes of the same round
ran moments apart). A peer library's time does not depend on the checkout, so the figure
"fastest peer / ``maml_loss``" changes by old ``maml_loss`` / new ``maml_loss``, which is
printed too, marked as derived. Nothing is asserted about a time.

Run from the repository root, with a checkout of the old commit beside it (a worktree
outside the repository; the new checkout defaults to this script's repository)::

    git worktree add /tmp/mamlbook-old a22d6fe
    .venv/bin/python benchmarks/compare_revisions.py --old /tmp/mamlbook-old --setting sinusoid \\
        --rounds 20 --json benchmarks/results/compare_sinusoid.json
    git worktree remove /tmp/mamlbook-old
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from meta_iteration import PROBLEMS, int_at_least

import mamlbook as mb

METHODS = ("maml_loss", "plain")
REVISIONS = ("old", "new")


def run_in(checkout: Path, arguments: list[str]) -> str:
    """Run this Python with ``arguments`` on ``checkout``'s package, from the checkout; its stdout.

    ``PYTHONPATH`` is the checkout, and a script's folder (not the working folder) leads
    ``sys.path``, so the checkout's ``mamlbook`` comes before the one installed in the
    environment (``check_imports`` makes sure of it).
    """
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(
        [sys.executable, *arguments], cwd=checkout, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(arguments)} in {checkout} failed:\n{done.stderr.strip()}")
    return done.stdout


def check_imports(checkout: Path) -> None:
    """Exit unless a script run by ``run_in`` imports ``checkout``'s own ``mamlbook``."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "where.py"
        script.write_text("import mamlbook\nprint(mamlbook.__file__)\n")
        found = Path(run_in(checkout, [str(script)]).strip()).resolve()
    expected = (checkout / "mamlbook" / "__init__.py").resolve()
    if found != expected:
        sys.exit(f"error: with PYTHONPATH={checkout}, mamlbook is imported from {found}, not {expected}")


def git_revision(checkout: Path) -> dict[str, object]:
    """The checkout's commit and whether its ``mamlbook/`` has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True, check=True).stdout

    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "modified": bool(git("status", "--porcelain", "mamlbook")),
    }


def label(revision: dict[str, object]) -> str:
    """A commit's short hash, with ``+`` where its package has uncommitted changes."""
    return str(revision["commit"])[:7] + ("+" if revision["modified"] else "")


def memory_record(checkout: Path, options: list[str]) -> dict[str, object]:
    """The checkout's ``meta_iteration.py --memory --no-plain`` record (one timed round)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "record.json"
        script = str(checkout / "benchmarks" / "meta_iteration.py")
        arguments = [script, *options, "--memory", "--no-plain", "--repeats", "1", "--warmup", "0"]
        run_in(checkout, [*arguments, "--json", str(path)])
        return json.loads(path.read_text(encoding="utf-8"))


def time_rounds(
    checkouts: dict[str, Path], options: list[str], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """``rounds`` rounds of one ``--time-one`` process per checkout and method, order rotated.

    Returns:
        Revision -> method -> the processes' median milliseconds, round by round.
    """
    units = [(revision, method) for method in METHODS for revision in checkouts]  # old, new, old, new
    medians: dict[str, dict[str, list[float]]] = {
        revision: {m: [] for m in METHODS} for revision in checkouts
    }
    for round_index in range(rounds):
        shift = round_index % len(units)
        for revision, method in units[shift:] + units[:shift]:
            script = str(checkouts[revision] / "benchmarks" / "meta_iteration.py")
            stdout = run_in(checkouts[revision], [script, *options, "--time-one", method])
            median_ms = statistics.median(json.loads(stdout.strip().splitlines()[-1]))
            medians[revision][method].append(median_ms)
            print(f"round {round_index + 1}/{rounds} {revision} {method}: {median_ms:.3f} ms", flush=True)
    return medians


def figures(
    medians: dict[str, dict[str, list[float]]], saved_bytes: dict[str, int]
) -> dict[str, dict[str, float]]:
    """Each figure for old and new and new / old (of medians, and the median of per-round ratios)."""

    def per_round(numerators: list[float], denominators: list[float]) -> float:
        return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))

    def over_plain(revision: str) -> list[float]:
        return [
            a / b for a, b in zip(medians[revision]["maml_loss"], medians[revision]["plain"], strict=True)
        ]

    result: dict[str, dict[str, float]] = {}
    for method in METHODS:
        old, new = (medians[revision][method] for revision in REVISIONS)
        result[f"{method}_ms"] = {
            "old": statistics.median(old),
            "new": statistics.median(new),
            "new_over_old": statistics.median(new) / statistics.median(old),
            "new_over_old_per_round": per_round(new, old),
        }
    old_ratio, new_ratio = (over_plain(revision) for revision in REVISIONS)
    result["maml_loss_over_plain"] = {
        "old": result["maml_loss_ms"]["old"] / result["plain_ms"]["old"],
        "new": result["maml_loss_ms"]["new"] / result["plain_ms"]["new"],
        "old_per_round": statistics.median(old_ratio),
        "new_per_round": statistics.median(new_ratio),
        "new_over_old_per_round": per_round(new_ratio, old_ratio),
    }
    result["maml_loss_over_plain"]["new_over_old"] = (
        result["maml_loss_over_plain"]["new"] / result["maml_loss_over_plain"]["old"]
    )
    result["fastest_peer_over_maml_loss_derived"] = {
        "new_over_old": 1 / result["maml_loss_ms"]["new_over_old"],
        "new_over_old_per_round": 1 / result["maml_loss_ms"]["new_over_old_per_round"],
    }
    result["maml_loss_saved_bytes"] = {
        "old": saved_bytes["old"],
        "new": saved_bytes["new"],
        "new_over_old": saved_bytes["new"] / saved_bytes["old"],
    }
    return result


def format_figures(result: dict[str, dict[str, float]], labels: dict[str, str]) -> str:
    """The table printed at the end: old, new, new / old (ratio of medians; per-round median)."""
    lines = [f"{'figure':<36}{'old ' + labels['old']:>16}{'new ' + labels['new']:>16}{'new / old':>22}"]

    def row(name: str, entry: dict[str, float], unit: str, scale: float = 1.0) -> None:
        per_round = f" ({entry['new_over_old_per_round']:.3f})" if "new_over_old_per_round" in entry else ""
        old = f"{scale * entry['old']:.3f}{unit}" if "old" in entry else "-"
        new = f"{scale * entry['new']:.3f}{unit}" if "new" in entry else "-"
        lines.append(f"{name:<36}{old:>16}{new:>16}{entry['new_over_old']:>13.3f}{per_round:<9}")

    row("maml_loss median ms", result["maml_loss_ms"], "")
    row("plain median ms", result["plain_ms"], "")
    row("maml_loss / plain", result["maml_loss_over_plain"], "x")
    row("fastest peer / maml_loss (derived)", result["fastest_peer_over_maml_loss_derived"], "")
    row("maml_loss saved MiB", result["maml_loss_saved_bytes"], "", 2.0**-20)
    lines.append(
        "new / old: ratio of the medians over the processes (in brackets, the median of the per-round "
        "ratios); the fastest peer's figure is derived as old maml_loss / new maml_loss"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see ``--help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the old checkout (a repository root)")
    parser.add_argument(
        "--new",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the new checkout (default: this script's repository)",
    )
    parser.add_argument("--setting", choices=sorted(PROBLEMS), default="sinusoid", help="default sinusoid")
    parser.add_argument(
        "--rounds", type=int_at_least(1), default=10, help="processes per checkout and method (default 10)"
    )
    parser.add_argument(
        "--repeats",
        type=int_at_least(1),
        default=None,
        help="timed iterations per process (default: the script's)",
    )
    parser.add_argument(
        "--warmup",
        type=int_at_least(0),
        default=None,
        help="untimed iterations per process (default: the script's)",
    )
    parser.add_argument(
        "--threads", type=int_at_least(1), default=None, help="torch.set_num_threads in each process"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Check the imports, measure the memory, time the rounds, print (and save) the figures."""
    args = parse_args(argv)
    checkouts = {"old": args.old.resolve(), "new": args.new.resolve()}
    options = ["--setting", args.setting]
    for name in ("repeats", "warmup", "threads"):
        if getattr(args, name) is not None:
            options += [f"--{name}", str(getattr(args, name))]
    for checkout in checkouts.values():
        check_imports(checkout)
    revisions = {name: git_revision(checkout) for name, checkout in checkouts.items()}
    labels = {name: label(revision) for name, revision in revisions.items()}
    print(
        f"{args.setting}: old {labels['old']} ({checkouts['old']}), new {labels['new']} ({checkouts['new']})"
    )

    records = {name: memory_record(checkout, options) for name, checkout in checkouts.items()}
    saved_bytes = {
        name: record["methods"]["maml_loss"]["memory"]["saved_bytes"] for name, record in records.items()
    }
    for name, record in records.items():
        check = max(record["meta_gradient_max_abs_diff"].values())
        print(
            f"{name}: saved {saved_bytes[name] / 2**20:.3f} MiB, meta-gradient check {check:.1e}", flush=True
        )

    medians = time_rounds(checkouts, options, args.rounds)
    result = figures(medians, saved_bytes)
    print(format_figures(result, labels))
    if args.json is not None:
        record = {
            "benchmark": "compare_revisions",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "settings": {"setting": args.setting, "rounds": args.rounds, "time_one_options": options},
            "checkouts": {
                name: {
                    "path": str(checkouts[name]),
                    "revision": revisions[name],
                    "memory_run": records[name],
                }
                for name in checkouts
            },
            "process_medians_ms": medians,
            "figures": result,
        }
        text = json.dumps(record, indent=2) + "\n"
        args.json.parent.mkdir(parents=True, exist_ok=True)
        mb.checkpoint.write_atomically(args.json, lambda file: file.write(text.encode()))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
