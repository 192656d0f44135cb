"""Build, from the book's chapters, the student notebooks and the autograder bundles.

The chapters stay the single source. For each chapter with exercises, the build writes

- ``student/<chapter>.ipynb``: the chapter with every solution taken out. nbgrader's
  ``ClearSolutions`` replaces each marked function body by ``raise NotImplementedError()``
  and each solution's opening text by an answer prompt; the solution's other cells are left
  out; nbgrader's ``ClearOutput`` clears every output;
- ``autograder/<chapter>/assignment.json``: what the grader needs (the graded questions,
  their checkers and points, the grading seed, the time limits and the smoke parameters),
  and ``autograder/<chapter>/solutions.ipynb``, the chapter with its solutions and no
  outputs, which the grader scores at full marks.

nbgrader is an optional dependency (``pip install "mamlbook[assignments]"``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import nbformat
import yaml

from .._files import write_atomically
from .assignment import Assignment
from .questions import has_exercises, is_marked, questions, solutions

ANSWER_PROMPT = "YOUR ANSWER HERE"
"""What the student notebook holds where a solution's text was."""

_CELL_METADATA_CLEARED = {"collapsed", "scrolled", "execution", "papermill"}


def _nbgrader_preprocessors() -> tuple[Any, Any]:
    """nbgrader's ClearSolutions and ClearOutput, configured for the book's markers."""
    try:
        from nbgrader.preprocessors import ClearOutput, ClearSolutions
    except ImportError as error:
        raise ImportError(
            'building assignments needs nbgrader: pip install "mamlbook[assignments]"'
        ) from error
    clear_solutions = ClearSolutions(enforce_metadata=False, text_stub=ANSWER_PROMPT)
    return clear_solutions, ClearOutput(remove_metadata_fields=_CELL_METADATA_CLEARED)


def student_notebook(chapter: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The chapter as a student receives it: no solution, no output.

    Args:
        chapter: the chapter notebook (it is not changed).

    Returns:
        A new notebook. Each solution's ``{solution-start}`` cell becomes an answer prompt;
        its marked code cells keep their signature and docstring, the body replaced by
        ``raise NotImplementedError()``; its other cells are left out.
    """
    student = copy.deepcopy(chapter)
    left_out = set()
    for solution in solutions(student):
        opening = student.cells[solution.cells[0]]
        opening.source = ""  # the directive and any solution text: all of it is the answer
        opening.metadata["nbgrader"] = {"solution": True, "grade": False, "locked": False}
        left_out.update(
            index
            for index in solution.cells[1:]
            if not (student.cells[index].cell_type == "code" and is_marked(student.cells[index].source))
        )
    student.cells = [cell for index, cell in enumerate(student.cells) if index not in left_out]
    clear_solutions, clear_output = _nbgrader_preprocessors()
    resources = {"language": "python"}
    student, resources = clear_solutions.preprocess(student, resources)
    student, _ = clear_output.preprocess(student, resources)
    for cell in student.cells:
        cell.metadata.pop("nbgrader", None)
    student.metadata.pop("papermill", None)
    return student


def solutions_notebook(chapter: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The chapter with its solutions and without outputs, for the autograder bundle."""
    _, clear_output = _nbgrader_preprocessors()
    notebook, _ = clear_output.preprocess(copy.deepcopy(chapter), {})
    notebook.metadata.pop("papermill", None)
    return notebook


def smoke_parameters(parameter_sets: Path, notebook_name: str) -> dict[str, Any]:
    """The chapter's ``smoke`` set from ``book/parameters.yml``, or ``{}`` when it has none."""
    if not parameter_sets.is_file():
        return {}
    sets = yaml.safe_load(parameter_sets.read_text()) or {}
    return dict((sets.get(notebook_name) or {}).get("smoke") or {})


def _write_notebook(path: Path, notebook: nbformat.NotebookNode) -> None:
    text = nbformat.writes(notebook)
    write_atomically(path, lambda file: file.write(text.encode()))


def build_chapter(chapter_path: Path, out: Path, *, parameter_sets: Path | None = None) -> Assignment:
    """Write one chapter's student notebook and autograder bundle under ``out``.

    Args:
        chapter_path: the chapter notebook, e.g. ``book/02_autograd.ipynb``.
        out: the assignments folder; ``student/`` and ``autograder/<chapter>/`` are written in it.
        parameter_sets: the book's ``parameters.yml`` (default: beside the chapter).

    Returns:
        The assignment written to the bundle.

    Raises:
        ValueError: the chapter's solutions or graded questions are malformed.
    """
    chapter = nbformat.read(chapter_path, as_version=4)
    return _write_chapter(
        chapter_path, chapter, out, parameter_sets or chapter_path.parent / "parameters.yml"
    )


def _write_chapter(
    chapter_path: Path, chapter: nbformat.NotebookNode, out: Path, parameter_sets: Path
) -> Assignment:
    """:func:`build_chapter` on a chapter already read."""
    assignment = Assignment(
        chapter=chapter_path.stem,
        notebook=chapter_path.name,
        questions=tuple(questions(chapter)),
        parameters=smoke_parameters(parameter_sets, chapter_path.name),
    )
    bundle = out / "autograder" / chapter_path.stem
    for folder in (out / "student", bundle):
        folder.mkdir(parents=True, exist_ok=True)
    _write_notebook(out / "student" / chapter_path.name, student_notebook(chapter))
    _write_notebook(bundle / "solutions.ipynb", solutions_notebook(chapter))
    text = json.dumps(assignment.to_json(), indent=2) + "\n"
    write_atomically(bundle / "assignment.json", lambda file: file.write(text.encode()))
    return assignment


def build_assignments(book: Path, out: Path) -> list[Assignment]:
    """Build every chapter of ``book`` that has exercises (see :func:`build_chapter`).

    Args:
        book: the folder of the chapter notebooks and ``parameters.yml``.
        out: where ``student/`` and ``autograder/`` are written.

    Returns:
        The assignments built, in the chapters' order.

    Raises:
        ValueError: ``book`` holds no notebook with exercises.
    """
    notebooks = {path: nbformat.read(path, as_version=4) for path in sorted(book.glob("*.ipynb"))}
    chapters = {path: notebook for path, notebook in notebooks.items() if has_exercises(notebook)}
    if not chapters:
        raise ValueError(f"book: no notebook with exercises in {book}")
    parameter_sets = book / "parameters.yml"
    return [_write_chapter(path, chapter, out, parameter_sets) for path, chapter in chapters.items()]
