"""One chapter's assignment, as the autograder bundle's ``assignment.json`` holds it."""

from __future__ import annotations

import dataclasses
import json
import numbers
from pathlib import Path
from typing import Any

from .._checks import check_seed
from .questions import Question

FORMAT = 1
"""The version of ``assignment.json``'s layout."""

GRADING_SEED = 1
"""The seed the checkers are called with when grading; not the chapters' 0, so students meet new problems."""


@dataclasses.dataclass(frozen=True)
class Assignment:
    """What the grader needs to grade one chapter's submissions.

    Attributes:
        chapter: the chapter's name, e.g. ``"02_autograd"``.
        notebook: the chapter's file name, e.g. ``"02_autograd.ipynb"``.
        questions: the graded questions, in the chapter's order.
        parameters: the papermill parameters each submission runs with (the chapter's smoke set).
        seed: the seed every checker is called with.
        time_limit_s: the most seconds one submission may run, all cells and grading together.
        cell_time_limit_s: the most seconds one cell may run before it is interrupted.
        question_time_limit_s: the most seconds one checker may take on the student's function.
    """

    chapter: str
    notebook: str
    questions: tuple[Question, ...]
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = GRADING_SEED
    time_limit_s: float = 600.0
    cell_time_limit_s: float = 120.0
    question_time_limit_s: float = 60.0

    def __post_init__(self):
        check_seed("seed", self.seed)
        for name in ("time_limit_s", "cell_time_limit_s", "question_time_limit_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        for question in self.questions:
            if isinstance(question.points, bool) or not isinstance(question.points, numbers.Real):
                raise TypeError(
                    f"points of question {question.label!r} must be a number, got {question.points!r}"
                )
            if question.points < 0:
                raise ValueError(f"points of question {question.label!r} must be >= 0, got {question.points}")

    @property
    def max_score(self) -> float:
        """The points of every question together."""
        return float(sum(question.points for question in self.questions))

    def to_json(self) -> dict[str, Any]:
        """The assignment as the JSON object of ``assignment.json``."""
        record = dataclasses.asdict(self)
        record["questions"] = [dataclasses.asdict(question) for question in self.questions]
        return {"format": FORMAT, **record}

    @classmethod
    def from_json(cls, record: object) -> Assignment:
        """The assignment of an ``assignment.json`` object.

        Raises:
            ValueError: the object is not an assignment of this format.
            TypeError: a field has the wrong type.
        """
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ValueError(f"not an assignment.json of format {FORMAT}")
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(record) - fields - {"format"})
        if unknown:
            raise ValueError(f"unknown fields in assignment.json: {unknown}")
        try:
            questions = tuple(Question(**question) for question in record["questions"])
            values = {name: record[name] for name in fields & set(record) if name != "questions"}
            return cls(questions=questions, **values)
        except (KeyError, TypeError) as error:
            raise ValueError(f"assignment.json is malformed: {error}") from error

    @classmethod
    def load(cls, bundle: Path) -> Assignment:
        """Read ``bundle/assignment.json`` (``bundle`` may also be the JSON file itself).

        Raises:
            FileNotFoundError: there is no such file.
            ValueError: it is not a valid assignment.
        """
        path = bundle / "assignment.json" if bundle.is_dir() else bundle
        if not path.is_file():
            raise FileNotFoundError(f"bundle: no assignment.json at {path}")
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}") from error
        return cls.from_json(record)
