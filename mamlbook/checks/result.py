"""What every exercise checker returns."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The verdict of a checker on a student's function, with a hint when it is wrong.

    A notebook shows it as one line: ``correct: ...`` or ``not yet: <hint>``. It is
    truthy when the answer is right, so ``assert check(...)`` works in scripts. Hints
    point at the mistake without printing the solution.

    Attributes:
        passed: whether the function behaves like the reference.
        message: what was checked when ``passed``, else the hint.
    """

    passed: bool
    message: str

    @classmethod
    def correct(cls, message: str) -> CheckResult:
        """A passing verdict saying what was checked."""
        return cls(True, message)

    @classmethod
    def hint(cls, message: str) -> CheckResult:
        """A failing verdict with a hint."""
        return cls(False, message)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'correct' if self.passed else 'not yet'}: {self.message}"

    def __repr__(self) -> str:
        return str(self)
