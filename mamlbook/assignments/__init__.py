"""Assignments for instructors: student notebooks built from the chapters, and a grader.

- :func:`~mamlbook.assignments.build.build_assignments` writes, for each chapter with
  exercises, the student notebook (solutions taken out by nbgrader, outputs cleared) and
  the autograder bundle.
- :func:`~mamlbook.assignments.grading.grade_folder` executes a folder of submissions and
  writes the scores per question (JSON and CSV) and each student's feedback.

The command line is ``mamlbook assignments build`` and ``mamlbook assignments grade``; the
book's page "Instructor's guide" walks through both. Needs the ``assignments`` extra
(``pip install "mamlbook[assignments]"``).
"""

try:
    import nbformat  # noqa: F401
    import papermill  # noqa: F401
except ImportError as error:
    raise ImportError('mamlbook.assignments needs its extra: pip install "mamlbook[assignments]"') from error

from .assignment import GRADING_SEED, Assignment
from .build import build_assignments, build_chapter, student_notebook
from .grading import QuestionGrade, SubmissionGrade, grade_folder, grade_submission
from .questions import Question, questions, solutions

__all__ = [
    "GRADING_SEED",
    "Assignment",
    "Question",
    "QuestionGrade",
    "SubmissionGrade",
    "build_assignments",
    "build_chapter",
    "grade_folder",
    "grade_submission",
    "questions",
    "solutions",
    "student_notebook",
]
