"""The grading cells: run inside the student's kernel, after the student's own cells.

The grader appends one cell per question to the submission. Each calls
:func:`grade_question`, which finds the student's function in the notebook's namespace,
runs the question's checker on it with the grading seed, under a time limit, prints the
verdict and appends it to a JSON-lines record that the grader reads back.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path

from .. import checks


class QuestionTimeout(BaseException):
    """The checker's call of the student's function ran past its time limit.

    A ``BaseException``, so that the checkers' handling of the student's exceptions
    does not turn it into an ordinary hint and carry on.
    """


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`QuestionTimeout` in the block after ``seconds``; no limit where there is no SIGALRM."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise QuestionTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def verdict(
    namespace: Mapping[str, object], function: str, checker: str, *, seed: int, time_limit_s: float
) -> tuple[bool, str]:
    """Whether the student's ``function`` passes ``checker`` at ``seed``, and the message to show."""
    if function not in namespace:
        return False, f"{function} is not defined: the cell that defines it did not run, or raised"
    candidate = namespace[function]
    if not callable(candidate):
        return False, f"{function} is a {type(candidate).__name__}, not a function"
    check = getattr(checks, checker, None)
    if check is None:
        return False, f"the grader has no checker {checker!r}: ask the instructor to rebuild the bundle"
    try:
        with _time_limit(time_limit_s):
            result = check(candidate, seed=seed)
    except QuestionTimeout:
        return False, f"{function} did not return within {time_limit_s:g} s: look for a loop that never ends"
    except Exception as error:  # the checker itself failed on this function: zero, with the reason
        return False, f"the checker could not run {function}: {type(error).__name__}: {error}"
    if not isinstance(result, checks.CheckResult):
        return False, f"the checker returned {type(result).__name__}: the grading was tampered with"
    return result.passed, result.message


def grade_question(
    namespace: Mapping[str, object],
    label: str,
    function: str,
    checker: str,
    *,
    seed: int,
    time_limit_s: float,
    record: str,
) -> None:
    """Grade one question and append ``{"label", "passed", "message"}`` as a line of ``record``."""
    passed, message = verdict(namespace, function, checker, seed=seed, time_limit_s=time_limit_s)
    print(f"{label}: {'correct' if passed else 'not yet'}: {message}")
    line = json.dumps({"label": label, "passed": passed, "message": message})
    with Path(record).open("a") as file:
        file.write(line + "\n")
