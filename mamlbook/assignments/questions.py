"""Where a chapter keeps its exercises' solutions, and which of them are graded questions.

A chapter marks each solution with sphinx-exercise's gated directives: every cell from
the ``{solution-start} <label>`` cell to the ``{solution-end}`` cell is the solution. A
*graded question* is a code cell of a solution that wraps a function's body in nbgrader's
markers and then calls one checker on that function::

    def sgd_step(model, params, x, y, loss_fn, lr):
        \"\"\"The new params dict after one SGD step.\"\"\"
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION


    print(mb.checks.check_sgd_step(sgd_step))

The student notebook keeps that cell with the marked body replaced by a stub; every
other cell of a solution is left out of it.
"""

from __future__ import annotations

import dataclasses
import re

import nbformat

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"

_SOLUTION_START = re.compile(r"^```\{solution-start\}\s+(\S+)", re.MULTILINE)
_SOLUTION_END = re.compile(r"^```\{solution-end\}", re.MULTILINE)
_EXERCISE = re.compile(r"^`{3,}\{exercise\}", re.MULTILINE)
_CHECKER_CALL = re.compile(r"\bmb\.checks\.(check_\w+)\(\s*(\w+)\s*\)")
_DEFINITION = re.compile(r"^def (\w+)\(", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Question:
    """One graded question: the reader's function and the checker that grades it.

    Attributes:
        label: the exercise's label in the chapter, e.g. ``"autograd-sgd-step"``.
        function: the name of the function the reader writes, e.g. ``"sgd_step"``.
        checker: the name of its checker in ``mamlbook.checks``, e.g. ``"check_sgd_step"``.
        points: what a correct function scores.
    """

    label: str
    function: str
    checker: str
    points: float = 1.0


@dataclasses.dataclass(frozen=True)
class Solution:
    """The cells of one exercise's solution, by index into the notebook's cells.

    Attributes:
        label: the exercise's label.
        cells: the indices of the cells from ``{solution-start}`` to ``{solution-end}``, both included.
    """

    label: str
    cells: tuple[int, ...]


def has_exercises(notebook: nbformat.NotebookNode) -> bool:
    """Whether the notebook holds any ``{exercise}`` block."""
    return any(cell.cell_type == "markdown" and _EXERCISE.search(cell.source) for cell in notebook.cells)


def solutions(notebook: nbformat.NotebookNode) -> list[Solution]:
    """Every solution block of the notebook, in order.

    Raises:
        ValueError: a solution is not closed, or one opens inside another.
    """
    found, label, start = [], None, 0
    for index, cell in enumerate(notebook.cells):
        opening = _SOLUTION_START.search(cell.source) if cell.cell_type == "markdown" else None
        if opening is not None:
            if label is not None:
                raise ValueError(
                    f"solution {opening.group(1)!r} opens inside solution {label!r} (cell {index})"
                )
            label, start = opening.group(1), index
        if label is not None and cell.cell_type == "markdown" and _SOLUTION_END.search(cell.source):
            found.append(Solution(label, tuple(range(start, index + 1))))
            label = None
    if label is not None:
        raise ValueError(f"solution {label!r} (cell {start}) has no {{solution-end}}")
    return found


def is_marked(source: str) -> bool:
    """Whether a cell's source holds a marked solution region."""
    return BEGIN_SOLUTION in source


def questions(notebook: nbformat.NotebookNode, points: float = 1.0) -> list[Question]:
    """The graded questions of a chapter, in order, each worth ``points``.

    Raises:
        ValueError: a marked cell lies outside a solution, has unbalanced markers, defines
            no function or calls no checker on the function it defines; or one solution
            holds two graded functions.
    """
    found = []
    inside = {index: solution.label for solution in solutions(notebook) for index in solution.cells}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not is_marked(cell.source):
            continue
        where = f"cell {index}"
        if index not in inside:
            raise ValueError(f"{where} has solution markers but is not inside a {{solution-start}} block")
        if cell.source.count(BEGIN_SOLUTION) != 1 or cell.source.count(END_SOLUTION) != 1:
            raise ValueError(f"{where} must hold one {BEGIN_SOLUTION!r} and one {END_SOLUTION!r} line")
        definitions = _DEFINITION.findall(cell.source)
        calls = _CHECKER_CALL.findall(cell.source)
        if len(definitions) != 1 or len(calls) != 1 or calls[0][1] != definitions[0]:
            raise ValueError(
                f"{where} must define one function and call one checker on it, "
                f"print(mb.checks.check_<name>(<function>)); found definitions {definitions}, "
                f"checker calls {calls}"
            )
        found.append(Question(inside[index], definitions[0], calls[0][0], points))
    labels = [question.label for question in found]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"one graded function per exercise: the solutions of {repeated} have several")
    return found
