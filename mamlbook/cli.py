"""The ``mamlbook`` console command::

    mamlbook reproduce {sinusoid,omniglot,navigation} --preset {paper,quick} --device {auto,cpu,cuda}
        [--seed N] [--inner-steps N] [--multi-step-loss-iterations N] --out FILE.json

trains and evaluates as the paper did (``mamlbook.reproduce``), prints the results
beside the paper's, and writes the whole record as JSON. Under ``torchrun`` the
meta-batches are shared by the processes and rank 0 alone prints and writes::

    mamlbook assignments build [--book book] [--out _build/assignments]
    mamlbook assignments grade BUNDLE SUBMISSIONS --out DIR [--seed N] [--time-limit S] [--jobs N]
        [-p NAME VALUE]

builds the student notebooks and autograder bundles from the chapters, and grades a
folder of submissions (``mamlbook.assignments``; the book's "Instructor's guide").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ._checks import MAX_SEED
from ._files import check_replaceable, write_atomically
from .data.omniglot import OmniglotDownloadError
from .distributed import launch_rank
from .reproduce import EXPERIMENTS, PRESETS, format_record, reproduce


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A parser of integers in ``minimum..maximum`` (no upper bound when None) from the command line."""
    expected = f"an integer >= {minimum}" + ("" if maximum is None else f" and at most {maximum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def _out_problem(out: Path) -> str | None:
    """Why the record cannot be written to ``out``, found before any training; None when it can."""
    try:
        check_replaceable(out)
    except (OSError, ValueError) as error:
        return str(error)
    if not out.parent.is_dir():
        return f"the folder {out.parent} does not exist"
    if not os.access(out.parent, os.W_OK | os.X_OK):
        return f"the folder {out.parent} is not writable"
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mamlbook", description="The companion package of the MAML book.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "reproduce",
        help="train and evaluate one of the paper's experiments",
        description="Train and evaluate one of the paper's experiments, and compare with the paper's table.",
    )
    run.add_argument("experiment", choices=EXPERIMENTS)
    run.add_argument(
        "--preset", choices=PRESETS, default="quick", help="the paper's settings, or a short version"
    )
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument(
        "--seed",
        type=_integer(0, MAX_SEED),
        help="seeds the initialisation, the training tasks and the test tasks (default: the preset's, 0)",
    )
    run.add_argument(
        "--inner-steps",
        type=_integer(1),
        help="inner steps of meta-training (default: the preset's, 1 for sine waves and navigation); "
        "the test keeps its own",
    )
    run.add_argument(
        "--multi-step-loss-iterations",
        type=_integer(0),
        help="MAML++'s multi-step loss for this many first meta-iterations (default: the preset's, 0); "
        "not for navigation",
    )
    run.add_argument(
        "--out", type=Path, help="write the record (settings, results, versions, time) to this JSON file"
    )
    run.add_argument(
        "--omniglot-root",
        type=Path,
        help="a folder with the Omniglot zips (e.g. ../shared/data/omniglot); without it they are downloaded",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _add_assignment_commands(commands)
    return parser.parse_args(argv)


def _add_assignment_commands(commands: argparse._SubParsersAction) -> None:
    assignments = commands.add_parser(
        "assignments",
        help="build student notebooks and autograder bundles, grade submissions",
        description="Assignments for instructors: see the book's Instructor's guide.",
    )
    actions = assignments.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="build the student notebooks and the autograder bundles")
    build.add_argument("--book", type=Path, default=Path("book"), help="the chapters' folder (default: book)")
    build.add_argument(
        "--out", type=Path, default=Path("_build/assignments"), help="(default: _build/assignments)"
    )
    grade = actions.add_parser("grade", help="grade a folder of submitted notebooks")
    grade.add_argument(
        "bundle", type=Path, help="the chapter's autograder folder, e.g. .../autograder/02_autograd"
    )
    grade.add_argument("submissions", type=Path, help="a folder of notebooks, one per student")
    grade.add_argument("--out", type=Path, required=True, help="where the scores and feedback go")
    grade.add_argument(
        "--seed", type=_integer(0, MAX_SEED), help="the checkers' seed (default: the bundle's)"
    )
    grade.add_argument(
        "--time-limit", type=_integer(1), help="seconds one submission may run (default: the bundle's)"
    )
    grade.add_argument(
        "--jobs", type=_integer(1), default=1, help="submissions graded at once (default: 1; one per core)"
    )
    grade.add_argument(
        "-p",
        dest="parameters",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a papermill parameter over the bundle's, its value read as YAML, e.g. -p omniglot_root DIR",
    )


def _assignments(args: argparse.Namespace) -> int:
    """``mamlbook assignments build|grade``."""
    import yaml

    from . import assignments

    try:
        if args.action == "build":
            built = assignments.build_assignments(args.book, args.out)
            for assignment in built:
                print(f"{assignment.chapter}: {len(assignment.questions)} graded questions")
            print(f"student notebooks in {args.out / 'student'}, bundles in {args.out / 'autograder'}")
            return 0
        parameters = {name: yaml.safe_load(value) for name, value in args.parameters}
        grades = assignments.grade_folder(
            args.bundle,
            args.submissions,
            args.out,
            seed=args.seed,
            time_limit_s=args.time_limit,
            parameters=parameters,
            jobs=args.jobs,
        )
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(f"mamlbook: {error}", file=sys.stderr)
        return 1
    for grade in grades:
        marks = sum(question.points for question in grade.questions)
        problems = f" ({len(grade.problems)} problems)" if grade.problems else ""
        print(f"{grade.student}: {grade.score:g} / {marks:g}{problems}, {grade.seconds:.0f} s")
    print(f"scores and feedback in {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "assignments":
        return _assignments(args)
    writes = launch_rank() == 0  # under torchrun, rank 0 alone prints and writes
    problem = None if args.out is None else _out_problem(args.out)
    if problem is not None:
        print(f"mamlbook: --out: {problem}", file=sys.stderr)
        return 2
    try:
        record = reproduce(
            args.experiment,
            args.preset,
            device=args.device,
            seed=args.seed,
            inner_steps=args.inner_steps,
            multi_step_loss_iterations=args.multi_step_loss_iterations,
            progress=not args.no_progress and writes,
            omniglot_root=args.omniglot_root,
        )
    except (ValueError, FileNotFoundError, OmniglotDownloadError) as error:
        print(f"mamlbook: {error}", file=sys.stderr)
        return 1
    if not writes:
        return 0
    print(format_record(record))
    if args.out is not None:
        text = json.dumps(record, indent=2) + "\n"
        write_atomically(args.out, lambda file: file.write(text.encode()))
        print(f"record written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
