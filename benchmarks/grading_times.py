"""How long the grader takes per submission, chapter by chapter, on this machine.

Builds the assignments from ``book/`` into a temporary folder, then grades, for every
chapter with exercises, one submission: the chapter's own solutions (the bundle's
``solutions.ipynb``), one at a time, at the bundle's smoke parameters. Prints a Markdown
table of the seconds and writes them as JSON, and the table beside it (``.md``), which the
book's Instructor's guide includes.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/grading_times.py --out benchmarks/results/grading_times_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

import mamlbook
from mamlbook.assignments import build_assignments, grade_folder

REPOSITORY = Path(__file__).resolve().parent.parent
OMNIGLOT = REPOSITORY.parent / "shared" / "data" / "omniglot"


def measure(folder: Path) -> dict[str, dict[str, float]]:
    """Each chapter's grading time of its solutions, with its score and the number of questions."""
    times = {}
    for assignment in build_assignments(REPOSITORY / "book", folder / "built"):
        submissions = folder / "submissions" / assignment.chapter
        submissions.mkdir(parents=True)
        bundle = folder / "built" / "autograder" / assignment.chapter
        (submissions / "solutions.ipynb").write_bytes((bundle / "solutions.ipynb").read_bytes())
        reads_omniglot = assignment.chapter in ("06_few_shot", "07_beyond_maml")
        parameters = {"omniglot_root": str(OMNIGLOT)} if reads_omniglot else {}
        (grade,) = grade_folder(
            bundle, submissions, folder / "grades" / assignment.chapter, parameters=parameters
        )
        times[assignment.chapter] = {
            "seconds": round(grade.seconds, 1),
            "questions": len(assignment.questions),
            "score": grade.score,
            "max_score": assignment.max_score,
        }
        print(
            f"{assignment.chapter}: {grade.seconds:.1f} s, {grade.score:g} / {assignment.max_score:g}",
            flush=True,
        )
    return times


def table(times: dict[str, dict[str, float]]) -> str:
    """The times as a Markdown table."""
    rows = ["| Chapter | Graded questions | Seconds per submission |", "| --- | --- | --- |"]
    rows += [f"| {chapter} | {row['questions']} | {row['seconds']:.0f} |" for chapter, row in times.items()]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the times as JSON to this file, the table beside it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        times = measure(Path(folder))
    print(table(times))
    if args.out is not None:
        record = {
            "date": datetime.date.today().isoformat(),
            "environment": {
                "mamlbook": mamlbook.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            },
            "chapters": times,
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table(times) + "\n")


if __name__ == "__main__":
    main()
