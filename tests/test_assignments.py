"""The assignments' build and the grader's parts that run without executing a notebook.

What executes notebooks (every chapter's student notebook and solutions graded, and the
bad submissions) is in ``test_assignments_grading.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import re
import time
from pathlib import Path

import nbformat
import pytest

import mamlbook as mb
from mamlbook.assignments import (
    Assignment,
    Question,
    build_chapter,
    kernel,
    questions,
    solutions,
    student_notebook,
)
from mamlbook.assignments.grading import feedback, find_submissions, grade_submission, write_reports
from mamlbook.assignments.questions import BEGIN_SOLUTION, END_SOLUTION, has_exercises

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(path for path in BOOK.glob("*.ipynb") if has_exercises(nbformat.read(path, as_version=4)))


def _notebook(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    """A notebook of ``(cell_type, source)`` cells."""
    make = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [make[kind](source) for kind, source in cells]
    return notebook


GRADED_CELL = f'''def square(x):
    """x squared."""
    {BEGIN_SOLUTION}
    return x * x
    {END_SOLUTION}


print(mb.checks.check_square(square))'''

TOY = _notebook(
    ("markdown", "```{exercise}\n:label: toy-square\n\nWrite `square(x)`.\n```"),
    ("markdown", "```{solution-start} toy-square\n:class: dropdown\n```\nMultiply x by itself."),
    ("code", GRADED_CELL),
    ("code", "print(square(3) + 1000)  # an experiment"),
    ("markdown", "The experiment prints 1009, as the answer predicts.\n\n```{solution-end}\n```"),
    ("code", "print('after the exercises')"),
)


def test_questions_are_found_from_the_markers_and_the_checker_call():
    assert questions(TOY) == [Question("toy-square", "square", "check_square", 1.0)]
    assert solutions(TOY)[0].cells == (1, 2, 3, 4)


@pytest.mark.parametrize(
    "cells, message",
    [
        ((("code", GRADED_CELL),), "not inside"),
        ((("markdown", "```{solution-start} a\n```"), ("code", "x = 1")), "no {solution-end}"),
        (
            (("markdown", "```{solution-start} a\n```"), ("markdown", "```{solution-start} b\n```")),
            "opens inside",
        ),
        (
            (
                ("markdown", "```{solution-start} a\n```"),
                ("code", GRADED_CELL.replace("check_square(square)", "check_square(cube)")),
                ("markdown", "```{solution-end}\n```"),
            ),
            "call one checker",
        ),
        (
            (
                ("markdown", "```{solution-start} a\n```"),
                ("code", GRADED_CELL + "\nprint(mb.checks.check_square(square))"),
                ("markdown", "```{solution-end}\n```"),
            ),
            "call one checker",
        ),
        (
            (
                ("markdown", "```{solution-start} a\n```"),
                ("code", GRADED_CELL.replace(END_SOLUTION, "")),
                ("markdown", "```{solution-end}\n```"),
            ),
            "one '### BEGIN SOLUTION'",
        ),
    ],
)
def test_malformed_solutions_are_reported(cells, message):
    with pytest.raises(ValueError, match=message):
        questions(_notebook(*cells))


def test_student_notebook_keeps_the_stub_and_drops_the_rest_of_the_solution():
    executed = copy.deepcopy(TOY)
    executed.cells[2].outputs = [nbformat.v4.new_output("stream", text="correct: ...")]
    executed.cells[2].execution_count = 3
    student = student_notebook(executed)
    sources = [cell.source for cell in student.cells]
    assert sources[0] == TOY.cells[0].source  # the exercise stays
    assert sources[1] == "YOUR ANSWER HERE"  # the solution's text does not
    stub = sources[2]
    assert 'def square(x):\n    """x squared."""\n' in stub and "raise NotImplementedError()" in stub
    assert "return x * x" not in stub and BEGIN_SOLUTION not in stub
    assert "print(mb.checks.check_square(square))" in stub
    assert sources[3:] == ["print('after the exercises')"]  # the experiment and the closing text: gone
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in student.cells[2:])
    assert executed.cells[2].outputs  # the chapter itself is left alone


def _significant_lines(text: str) -> set[str]:
    """The lines of ``text`` long enough to identify it, stripped."""
    return {
        line.strip()
        for line in text.splitlines()
        if len(line.strip()) >= 12 and not line.strip().startswith(("```", "#", ":class:"))
    }


def _solution_texts(chapter: nbformat.NotebookNode) -> dict[str, str]:
    """Each solution's answer: its marked regions and every other cell of it, by label."""
    texts = {}
    for solution in solutions(chapter):
        parts = []
        for index in solution.cells:
            source = chapter.cells[index].source
            if BEGIN_SOLUTION in source:
                source = source.split(BEGIN_SOLUTION)[1].split(END_SOLUTION)[0]
            parts.append(source)
        texts[solution.label] = "\n".join(parts)
    return texts


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_student_notebook_holds_none_of_the_solutions(path: Path):
    chapter = nbformat.read(path, as_version=4)
    student = student_notebook(chapter)
    in_solutions = {index for solution in solutions(chapter) for index in solution.cells}
    elsewhere = set().union(
        *(
            _significant_lines(cell.source)
            for index, cell in enumerate(chapter.cells)
            if index not in in_solutions
        )
    )
    student_lines = set().union(*(_significant_lines(cell.source) for cell in student.cells))
    searched = 0
    for label, text in _solution_texts(chapter).items():
        answer = _significant_lines(text) - elsewhere  # what only the solution says
        searched += len(answer)
        assert not answer & student_lines, f"{path.name}: solution {label!r} leaks into the student notebook"
    assert searched > 0
    assert not any(cell.get("outputs") for cell in student.cells if cell.cell_type == "code")
    assert not any("{solution-" in cell.source for cell in student.cells)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.stem)
def test_every_graded_question_has_a_checker_that_takes_a_seed(path: Path):
    for question in questions(nbformat.read(path, as_version=4)):
        checker = getattr(mb.checks, question.checker)
        assert "seed" in inspect.signature(checker).parameters, question.checker


def test_build_writes_the_student_notebook_and_the_bundle(tmp_path: Path):
    assignment = build_chapter(BOOK / "03_many_tasks.ipynb", tmp_path)
    assert [question.function for question in assignment.questions] == ["mean_and_ci95", "score_tasks"]
    assert Assignment.load(tmp_path / "autograder" / "03_many_tasks") == assignment
    assert assignment.parameters["pretrain_iterations"] == 20  # the smoke set of book/parameters.yml
    assert assignment.seed != 0  # graded on problems other than the chapter's
    student = nbformat.read(tmp_path / "student" / "03_many_tasks.ipynb", as_version=4)
    assert sum("raise NotImplementedError()" in cell.source for cell in student.cells) == 2
    solutions_notebook = nbformat.read(
        tmp_path / "autograder" / "03_many_tasks" / "solutions.ipynb", as_version=4
    )
    assert questions(solutions_notebook) == list(assignment.questions)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"seed": -1}, ValueError),
        ({"time_limit_s": 0}, ValueError),
        ({"questions": (Question("a", "f", "check_f", -1),)}, ValueError),
        ({"questions": (Question("a", "f", "check_f", "1"),)}, TypeError),
    ],
)
def test_assignment_rejects_bad_fields(change, error):
    valid = Assignment("c", "c.ipynb", (Question("a", "f", "check_f"),))
    with pytest.raises(error):
        dataclasses.replace(valid, **change)


def test_assignment_json_round_trips_and_rejects_other_files(tmp_path: Path):
    assignment = Assignment("c", "c.ipynb", (Question("a", "f", "check_f", 2.5),), {"steps": 3}, seed=7)
    assert Assignment.from_json(json.loads(json.dumps(assignment.to_json()))) == assignment
    with pytest.raises(ValueError, match="format"):
        Assignment.from_json({"chapter": "c"})
    with pytest.raises(ValueError, match="unknown fields"):
        Assignment.from_json({**assignment.to_json(), "points": 3})
    (tmp_path / "assignment.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        Assignment.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        Assignment.load(tmp_path / "missing")


def test_submissions_are_files_or_folders_named_after_the_student(tmp_path: Path):
    (tmp_path / "alice.ipynb").write_text("{}")
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "02_autograd.ipynb").write_text("{}")
    (tmp_path / "bob" / "scratch.ipynb").write_text("{}")
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "my_homework.ipynb").write_text("{}")
    (tmp_path / "dan.pdf").write_text("%PDF")
    (tmp_path / ".DS_Store").write_text("")
    found = find_submissions(tmp_path, "02_autograd.ipynb")
    assert [(student, path.relative_to(tmp_path).as_posix()) for student, path in found] == [
        ("alice", "alice.ipynb"),
        ("bob", "bob/02_autograd.ipynb"),
        ("carol", "carol/my_homework.ipynb"),
        ("dan", "dan.pdf"),
    ]
    with pytest.raises(NotADirectoryError):
        find_submissions(tmp_path / "alice.ipynb", "02_autograd.ipynb")
    (tmp_path / "alice").mkdir()
    with pytest.raises(ValueError, match=r"several entries for \['alice'\]"):
        find_submissions(tmp_path, "02_autograd.ipynb")


@pytest.mark.parametrize("content", [b"not json at all", b'{"cells": 3}', b"\x89PNG\r\n\x1a\n"])
def test_a_file_that_is_not_a_notebook_scores_zero_without_running(tmp_path: Path, content: bytes):
    path = tmp_path / "eve.ipynb"
    path.write_bytes(content)
    assignment = Assignment("c", "c.ipynb", (Question("a", "f", "check_f", 2),))
    started = time.perf_counter()
    grade = grade_submission(assignment, "eve", path)
    assert time.perf_counter() - started < 5  # nothing was executed
    assert grade.score == 0 and len(grade.problems) == 1
    assert grade.problems[0].startswith("not a notebook: eve.ipynb")
    assert grade.questions[0].message.startswith("not graded: not a notebook")


def _square_ok(x):
    return x * x


def _loops_forever(*args, **kwargs):
    while True:
        pass


@pytest.mark.parametrize(
    "namespace, passed, message",
    [
        ({}, False, "sgd_step is not defined"),
        ({"sgd_step": 3}, False, "sgd_step is a int, not a function"),
        ({"sgd_step": _loops_forever}, False, "did not return within 0.5 s"),
    ],
)
def test_kernel_verdict_turns_every_failure_into_a_message(namespace, passed, message):
    verdict = kernel.verdict(namespace, "sgd_step", "check_sgd_step", seed=1, time_limit_s=0.5)
    assert verdict[0] is passed and message in verdict[1]


def test_kernel_verdict_of_an_unknown_checker_and_of_a_checker_that_fails():
    assert (
        "no checker 'check_nothing'"
        in kernel.verdict({"f": _square_ok}, "f", "check_nothing", seed=1, time_limit_s=5)[1]
    )
    passed, message = kernel.verdict({"f": _square_ok}, "f", "check_sgd_step", seed=-1, time_limit_s=5)
    assert not passed and message.startswith("the checker could not run f: ValueError")


def test_kernel_records_the_verdict_of_each_question(tmp_path: Path, capsys):
    record = tmp_path / "verdicts.jsonl"
    for label in ("first", "second"):
        kernel.grade_question({}, label, "f", "check_sgd_step", seed=1, time_limit_s=5, record=str(record))
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["label"] for line in lines] == ["first", "second"]
    assert not any(line["passed"] for line in lines)
    assert "first: not yet: f is not defined" in capsys.readouterr().out


def test_reports_hold_every_question_and_every_problem(tmp_path: Path):
    assignment = Assignment("c", "c.ipynb", (Question("a", "f", "check_f", 2), Question("b", "g", "check_g")))
    grade = mb.assignments.SubmissionGrade(
        "bob",
        (
            mb.assignments.QuestionGrade("a", "f", 2, 2, "correct"),
            mb.assignments.QuestionGrade("b", "g", 1, 0, "the sign is reversed"),
        ),
        ("the cell starting 'x = 1 / 0' raised ZeroDivisionError: division by zero",),
        1.0,
    )
    write_reports(assignment, [grade], tmp_path)
    assert (tmp_path / "scores.csv").read_text().splitlines() == [
        "student,a,b,score,max_score,problems",
        "bob,2,0,2,3,the cell starting 'x = 1 / 0' raised ZeroDivisionError: division by zero",
    ]
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["max_score"] == 3 and report["submissions"][0]["score"] == 2
    text = (tmp_path / "feedback" / "bob.md").read_text()
    assert text == feedback(assignment, grade)
    assert "Score: 2 / 3" in text and "the sign is reversed" in text and "ZeroDivisionError" in text


def test_command_line_builds_every_chapter_and_reports_a_bad_bundle(tmp_path: Path, capsys):
    from mamlbook.cli import main

    assert main(["assignments", "build", "--book", str(BOOK), "--out", str(tmp_path / "built")]) == 0
    built = sorted(path.stem for path in (tmp_path / "built" / "student").glob("*.ipynb"))
    assert built == [path.stem for path in CHAPTERS]
    assert sorted(path.name for path in (tmp_path / "built" / "autograder").iterdir()) == built
    (tmp_path / "submissions").mkdir()
    missing = ["assignments", "grade", str(tmp_path / "nowhere"), str(tmp_path / "submissions"), "--out", "x"]
    assert main(missing) == 1
    assert "no assignment.json" in capsys.readouterr().err
    bundle = str(tmp_path / "built" / "autograder" / "02_autograd")
    inside = ["assignments", "grade", bundle, str(tmp_path / "submissions"), "--out"]
    assert main([*inside, str(tmp_path / "submissions" / "grades")]) == 1
    assert "inside the submissions folder" in capsys.readouterr().err


def test_the_instructors_guide_lists_every_graded_question():
    rows = re.findall(
        r"^\| \d \| ([\w-]+) \| `(\w+)` \| `(\w+)` \|$", (BOOK / "instructors.md").read_text(), re.M
    )
    found = [
        (question.label, question.function, question.checker)
        for path in CHAPTERS
        for question in questions(nbformat.read(path, as_version=4))
    ]
    assert rows == found
