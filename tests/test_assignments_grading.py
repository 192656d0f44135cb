"""The grader on real submissions: every chapter's student notebook and solutions, and bad ones.

Each submission is executed with its chapter's smoke parameters (seconds to a minute), so
these tests are in the ``book`` tier.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import nbformat
import psutil
import pytest

from mamlbook.assignments import Assignment, build_assignments, grade_folder

pytestmark = pytest.mark.book

REPOSITORY = Path(__file__).resolve().parent.parent
OMNIGLOT = REPOSITORY.parent / "shared" / "data" / "omniglot"
CHAPTERS_WITH_EXERCISES = [
    "00_idea",
    "01_gradient_descent",
    "02_autograd",
    "03_many_tasks",
    "04_maml",
    "05_first_order",
    "06_few_shot",
    "07_beyond_maml",
    "08_reinforcement_learning",
    "quickstart",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("assignments")
    assignments = build_assignments(REPOSITORY / "book", out)
    assert [assignment.chapter for assignment in assignments] == CHAPTERS_WITH_EXERCISES
    return out


def _parameters(chapter: str) -> dict[str, str]:
    """The local Omniglot for the chapters that read it (no download in CI)."""
    return {"omniglot_root": str(OMNIGLOT)} if chapter in ("06_few_shot", "07_beyond_maml") else {}


def _set_cell(notebook: nbformat.NotebookNode, starting: str, source: str) -> None:
    """Replace the source of the one code cell whose function ``starting`` is defined."""
    (cell,) = [
        cell for cell in notebook.cells if cell.cell_type == "code" and f"def {starting}(" in cell.source
    ]
    cell.source = source


@pytest.mark.parametrize("chapter", CHAPTERS_WITH_EXERCISES)
def test_student_notebook_scores_zero_and_the_solutions_full_marks(built: Path, chapter: str, tmp_path: Path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    bundle = built / "autograder" / chapter
    (submissions / "student.ipynb").write_bytes((built / "student" / f"{chapter}.ipynb").read_bytes())
    (submissions / "solutions.ipynb").write_bytes((bundle / "solutions.ipynb").read_bytes())
    grades = grade_folder(bundle, submissions, tmp_path / "out", parameters=_parameters(chapter), jobs=2)
    student, solutions = sorted(grades, key=lambda grade: grade.student != "student")
    max_score = Assignment.load(bundle).max_score
    assert student.problems == () and solutions.problems == ()  # both ran top to bottom without error
    assert student.score == 0
    assert all("NotImplementedError" in question.message for question in student.questions)
    assert solutions.score == max_score, [question.message for question in solutions.questions]
    report = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert {row["student"]: row["score"] for row in report["submissions"]} == {
        "solutions": max_score,
        "student": 0,
    }


SOLUTIONS_BODY = (
    "    return per_task_losses.mean(dim=0), 1.96 * per_task_losses.std(dim=0) / math.sqrt(num_tasks)"
)


def test_planted_mistakes_errors_and_hangs_cost_only_their_questions(built: Path, tmp_path: Path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assignment = Assignment.load(built / "autograder" / "03_many_tasks")
    limits = {"cell_time_limit_s": 20.0, "question_time_limit_s": 5.0}
    (bundle / "assignment.json").write_text(json.dumps(dataclasses.replace(assignment, **limits).to_json()))
    solutions = nbformat.read(built / "autograder" / "03_many_tasks" / "solutions.ipynb", as_version=4)
    answers = {
        function: next(cell.source for cell in solutions.cells if f"def {function}(" in cell.source)
        for function in ("mean_and_ci95", "score_tasks")
    }
    assert SOLUTIONS_BODY in answers["mean_and_ci95"]
    submissions = tmp_path / "submissions"
    submissions.mkdir()

    def submit(student: str, **changes: str) -> None:
        """The student notebook with both functions written, then ``changes`` planted."""
        notebook = nbformat.read(built / "student" / "03_many_tasks.ipynb", as_version=4)
        for function, source in {**answers, **changes}.items():
            _set_cell(notebook, function, source)
        nbformat.write(notebook, submissions / f"{student}.ipynb")

    population_std = SOLUTIONS_BODY.replace(".std(dim=0)", ".std(dim=0, correction=0)")
    submit("bob", mean_and_ci95=answers["mean_and_ci95"].replace(SOLUTIONS_BODY, population_std))
    submit("carol", score_tasks="def score_tasks(model, params, batch, loss_fn, lr, steps):\n    return [\n")
    submit(
        "dave",
        mean_and_ci95=answers["mean_and_ci95"].replace(SOLUTIONS_BODY, "    while True:\n        pass"),
    )
    (submissions / "erin.ipynb").write_bytes(b'{"cells": [')

    grades = {grade.student: grade for grade in grade_folder(bundle, submissions, tmp_path / "out", jobs=2)}

    bob = grades["bob"]
    assert [question.score for question in bob.questions] == [0, 1] and bob.problems == ()
    assert "T - 1" in bob.questions[0].message  # the hint names the mistake: the population std
    carol = grades["carol"]
    assert [question.score for question in carol.questions] == [1, 0]
    assert (
        carol.questions[1].message
        == "score_tasks is not defined: the cell that defines it did not run, or raised"
    )
    assert len(carol.problems) == 1 and "raised SyntaxError" in carol.problems[0]
    dave = grades["dave"]  # the chapter's own check of his function hangs, then the grader's
    assert [question.score for question in dave.questions] == [0, 1]
    assert "did not return within 5 s" in dave.questions[0].message
    assert dave.problems == (
        "the cell starting 'def mean_and_ci95(per_task_losses):' ran past 20 s and was interrupted",
    )
    erin = grades["erin"]
    assert erin.score == 0 and erin.problems[0].startswith("not a notebook: erin.ipynb")
    csv_rows = (tmp_path / "out" / "scores.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in csv_rows] == ["student", "bob", "carol", "dave", "erin"]
    for student in grades:
        assert (tmp_path / "out" / "feedback" / f"{student}.md").is_file()


def test_a_notebook_past_its_time_limit_is_stopped_with_its_kernel(built: Path, tmp_path: Path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    notebook = nbformat.read(built / "student" / "01_gradient_descent.ipynb", as_version=4)
    pid_file = tmp_path / "kernel.pid"
    stall = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)"
    notebook.cells.insert(3, nbformat.v4.new_code_cell(stall))
    nbformat.write(notebook, submissions / "frank.ipynb")
    (grade,) = grade_folder(
        built / "autograder" / "01_gradient_descent", submissions, tmp_path / "out", time_limit_s=20
    )
    assert grade.score == 0
    assert grade.problems == (
        "the notebook did not finish within 20 s in the cell starting 'import os, time'",
    )
    assert grade.questions[0].message.startswith("not graded: the notebook did not finish within 20 s")
    kernel = int(pid_file.read_text())
    assert kernel != os.getpid()
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE
