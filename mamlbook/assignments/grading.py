"""Grade a folder of submitted notebooks: scores per question, and feedback per student.

Each submission is executed on its own (papermill, the chapter's smoke parameters, time
limits per cell and per notebook), with one grading cell per question appended: it calls
the question's checker on the student's function with the grading seed. A submission that
is not a notebook, raises, or hangs is scored zero on the questions it affects, with the
reason in its feedback; the other submissions are graded all the same.

Writes, under ``out``: ``scores.json`` and ``scores.csv`` (one row per student, one column
per question), ``feedback/<student>.md`` and ``executed/<student>.ipynb``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat

from .._checks import check_int
from .._files import write_atomically
from . import _execute
from .assignment import Assignment

GRADING_TAG = "mamlbook-grading"
"""The tag of the cells the grader appends to a submission."""

_BACKSTOP_S = 60  # seconds past the time limit before the grader kills a run that did not stop itself
_ERRORS_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class QuestionGrade:
    """One question of one submission: the points scored and the checker's message."""

    label: str
    function: str
    points: float
    score: float
    message: str


@dataclasses.dataclass(frozen=True)
class SubmissionGrade:
    """One student's submission, graded.

    Attributes:
        student: the student, from the submission's file or folder name.
        questions: the grade of each question, in the chapter's order.
        problems: what went wrong running the notebook (not a notebook, cells that raised,
            the time limit), empty when nothing did.
        seconds: the wall time of the grading.
    """

    student: str
    questions: tuple[QuestionGrade, ...]
    problems: tuple[str, ...]
    seconds: float

    @property
    def score(self) -> float:
        return float(sum(question.score for question in self.questions))

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "score": self.score}


def find_submissions(folder: Path, notebook_name: str) -> list[tuple[str, Path]]:
    """The ``(student, file)`` pairs of a folder of submissions, sorted by student.

    A file ``alice.ipynb`` is Alice's submission; a folder ``alice/`` holds hers as the file
    named like the chapter, or as its only ``.ipynb``. Any other file is a submission too
    (graded as not a notebook). Hidden files are skipped.

    Raises:
        NotADirectoryError: ``folder`` is not a folder.
        ValueError: two entries name the same student.
    """
    if not folder.is_dir():
        raise NotADirectoryError(f"submissions: {folder} is not a folder")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            notebooks = sorted(entry.glob("*.ipynb"))
            named = entry / notebook_name
            found.append(
                (entry.name, named if named.is_file() else notebooks[0] if len(notebooks) == 1 else entry)
            )
        else:
            found.append((entry.stem, entry))
    students = [student for student, _ in found]
    repeated = sorted({student for student in students if students.count(student) > 1})
    if repeated:
        raise ValueError(
            f"submissions: several entries for {repeated} (e.g. alice.ipynb and alice/); keep one each"
        )
    return found


def _read_submission(path: Path) -> tuple[nbformat.NotebookNode | None, str | None]:
    """The submitted notebook, or None and why it cannot be read as one."""
    if path.is_dir():
        return (
            None,
            f"no notebook found: the folder {path.name} holds {len(list(path.glob('*.ipynb')))} .ipynb files",
        )
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # any unreadable file is the same verdict: not a notebook
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"not a notebook: {path.name} cannot be read as one ({reason[:200]})"
    return notebook, None


def _with_grading_cells(notebook: nbformat.NotebookNode, assignment: Assignment, record: Path):
    """The submission with the import cell and one grading cell per question appended."""
    graded = copy.deepcopy(notebook)
    cells = ["import mamlbook.assignments.kernel as mamlbook_grading"]
    for question in assignment.questions:
        cells.append(
            f"mamlbook_grading.grade_question(globals(), {question.label!r}, {question.function!r}, "
            f"{question.checker!r}, seed={assignment.seed}, "
            f"time_limit_s={assignment.question_time_limit_s}, record={str(record)!r})"
        )
    for source in cells:
        graded.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": [GRADING_TAG]}))
    graded.metadata["kernelspec"] = {
        "name": _execute.KERNEL,
        "display_name": "Python 3",
        "language": "python",
    }
    return graded


def _first_line(source: str) -> str:
    line = next((line for line in source.splitlines() if line.strip() and not line.startswith("#")), "")
    return line if len(line) <= 60 else line[:57] + "..."


def _cell_problems(executed: nbformat.NotebookNode, assignment: Assignment) -> list[str]:
    """What went wrong in the student's cells of an executed submission."""
    problems = []
    for cell in executed.cells:
        if cell.cell_type != "code" or GRADING_TAG in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error":
                continue
            where = f"the cell starting {_first_line(cell.source)!r}"
            if output.get("ename") == "KeyboardInterrupt":
                problems.append(f"{where} ran past {assignment.cell_time_limit_s:g} s and was interrupted")
            else:
                problems.append(f"{where} raised {output.get('ename')}: {str(output.get('evalue'))[:200]}")
    if len(problems) > _ERRORS_SHOWN:
        problems = problems[:_ERRORS_SHOWN] + [f"and {len(problems) - _ERRORS_SHOWN} more cells that raised"]
    return problems


def _running_cell(executed: nbformat.NotebookNode) -> str:
    """The cell that was running when the time limit stopped the notebook (the last one started)."""
    started = [
        cell
        for cell in executed.cells
        if cell.cell_type == "code" and cell.metadata.get("papermill", {}).get("start_time")
    ]
    if not started:
        return ""
    if GRADING_TAG in started[-1].metadata.get("tags", []):
        return " while grading"
    return f" in the cell starting {_first_line(started[-1].source)!r}"


def _execute_submission(spec: dict[str, Any], work: Path) -> tuple[int, str]:
    """Run the executor process on ``spec``; its exit status and the last line of its stderr."""
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    environment = {**os.environ, "JUPYTER_PREFER_ENV_PATH": "1"}  # the kernel of this environment
    process = subprocess.Popen(
        [sys.executable, "-m", "mamlbook.assignments._execute", str(spec_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        _, stderr = process.communicate(timeout=spec["time_limit_s"] + _BACKSTOP_S)
    except subprocess.TimeoutExpired:
        _execute.kill_descendants(process.pid)
        process.kill()
        process.communicate()
        return _execute.TIMED_OUT, ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return process.returncode, lines[-1] if lines else ""


def grade_submission(
    assignment: Assignment, student: str, path: Path, executed_path: Path | None = None
) -> SubmissionGrade:
    """Execute and grade one submission; never raises for a bad submission.

    Args:
        assignment: what to grade and how.
        student: the student's name, for the report.
        path: the submitted file.
        executed_path: where to keep the executed notebook (not kept when None).

    Returns:
        Every question's score, and the problems met on the way.
    """
    started = time.perf_counter()
    notebook, problem = _read_submission(path)
    problems = [] if problem is None else [problem]
    records: dict[str, tuple[bool, str]] = {}
    not_graded = problem
    if notebook is not None:
        with tempfile.TemporaryDirectory(prefix="mamlbook-grading-") as folder:
            work = Path(folder)
            record = work / "verdicts.jsonl"
            submission, output = work / "submission.ipynb", work / "executed.ipynb"
            nbformat.write(_with_grading_cells(notebook, assignment, record), submission)
            spec = {
                "input": str(submission),
                "output": str(output),
                "cwd": str(work),
                "parameters": assignment.parameters,
                "time_limit_s": assignment.time_limit_s,
                "cell_time_limit_s": assignment.cell_time_limit_s,
            }
            status, error = _execute_submission(spec, work)
            executed = nbformat.read(output, as_version=4) if output.is_file() else None
            if executed is not None:
                problems += _cell_problems(executed, assignment)
                if executed_path is not None:
                    executed_path.parent.mkdir(parents=True, exist_ok=True)
                    text = nbformat.writes(executed)
                    write_atomically(executed_path, lambda file: file.write(text.encode()))
            if status == _execute.TIMED_OUT:
                running = "" if executed is None else _running_cell(executed)
                not_graded = f"the notebook did not finish within {assignment.time_limit_s:g} s{running}"
                problems.append(not_graded)
            elif status != _execute.RAN:
                not_graded = f"the notebook could not be run: {error or f'exit status {status}'}"
                problems.append(not_graded)
            if record.is_file():
                for line in record.read_text().splitlines():
                    with contextlib.suppress(json.JSONDecodeError, KeyError):
                        verdict = json.loads(line)
                        records[verdict["label"]] = (bool(verdict["passed"]), str(verdict["message"]))
    questions = []
    for question in assignment.questions:
        passed, message = records.get(
            question.label, (False, f"not graded: {not_graded or 'its grading cell did not run'}")
        )
        questions.append(
            QuestionGrade(
                question.label, question.function, question.points, question.points * passed, message
            )
        )
    return SubmissionGrade(student, tuple(questions), tuple(problems), time.perf_counter() - started)


def feedback(assignment: Assignment, grade: SubmissionGrade) -> str:
    """The feedback file of one student, in Markdown."""
    lines = [
        f"# {assignment.chapter}: feedback for {grade.student}",
        "",
        f"Score: {grade.score:g} / {assignment.max_score:g}",
        "",
    ]
    for question in grade.questions:
        lines += [
            f"## {question.label} (`{question.function}`): {question.score:g} / {question.points:g}",
            "",
            question.message,
            "",
        ]
    if grade.problems:
        lines += (
            ["## Problems running the notebook", ""] + [f"- {problem}" for problem in grade.problems] + [""]
        )
    return "\n".join(lines)


def _scores_csv(assignment: Assignment, grades: Sequence[SubmissionGrade]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    labels = [question.label for question in assignment.questions]
    writer.writerow(["student", *labels, "score", "max_score", "problems"])
    for grade in grades:
        scores = [f"{question.score:g}" for question in grade.questions]
        writer.writerow(
            [
                grade.student,
                *scores,
                f"{grade.score:g}",
                f"{assignment.max_score:g}",
                "; ".join(grade.problems),
            ]
        )
    return buffer.getvalue()


def write_reports(assignment: Assignment, grades: Sequence[SubmissionGrade], out: Path) -> None:
    """Write ``scores.json``, ``scores.csv`` and ``feedback/<student>.md`` under ``out``."""
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    report = {
        "assignment": assignment.to_json(),
        "max_score": assignment.max_score,
        "submissions": [grade.to_json() for grade in grades],
    }
    outputs = {
        out / "scores.json": json.dumps(report, indent=2) + "\n",
        out / "scores.csv": _scores_csv(assignment, grades),
    }
    outputs.update(
        {out / "feedback" / f"{grade.student}.md": feedback(assignment, grade) for grade in grades}
    )
    for path, text in outputs.items():
        write_atomically(path, lambda file, text=text: file.write(text.encode()))


def grade_folder(
    bundle: Path,
    submissions: Path,
    out: Path,
    *,
    seed: int | None = None,
    time_limit_s: float | None = None,
    parameters: Mapping[str, Any] | None = None,
    jobs: int = 1,
) -> list[SubmissionGrade]:
    """Grade every submission in a folder and write the reports.

    Args:
        bundle: the chapter's autograder folder (holding ``assignment.json``).
        submissions: the folder of submitted notebooks (see :func:`find_submissions`).
        out: where the reports go; created if missing; must not be inside ``submissions``.
        seed: the checkers' seed (default: the bundle's).
        time_limit_s: the most seconds one submission may run (default: the bundle's).
        parameters: papermill parameters over the bundle's, e.g. ``{"omniglot_root": "..."}``.
        jobs: how many submissions run at once (one per CPU core suits single-threaded chapters).

    Returns:
        The grades, one per submission, sorted by student.

    Raises:
        FileNotFoundError, ValueError: the bundle is missing or invalid.
        NotADirectoryError: ``submissions`` is not a folder.
        ValueError: ``out`` is inside ``submissions``, or ``jobs`` < 1.
    """
    jobs = check_int("jobs", jobs, minimum=1)
    assignment = Assignment.load(bundle)
    changes: dict[str, Any] = {"parameters": {**assignment.parameters, **(parameters or {})}}
    if seed is not None:
        changes["seed"] = seed
    if time_limit_s is not None:
        changes["time_limit_s"] = time_limit_s
    assignment = dataclasses.replace(assignment, **changes)
    found = find_submissions(submissions, assignment.notebook)
    if out.resolve().is_relative_to(submissions.resolve()):
        raise ValueError(f"out: {out} is inside the submissions folder {submissions}; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:  # each grading is its own process
        grades = list(
            pool.map(
                lambda pair: grade_submission(assignment, *pair, out / "executed" / f"{pair[0]}.ipynb"), found
            )
        )
    write_reports(assignment, grades, out)
    return grades
