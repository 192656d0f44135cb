"""How every checker calls the reader's function: arguments checked, failures turned into hints.

A checker computes its expected answer first, on its own tensors, then calls the reader's
function on copies through :func:`call_student`, so that neither an exception nor an
in-place change in the reader's code can crash the checker or alter what it compares with.
"""

from __future__ import annotations

from collections.abc import Callable

from .._checks import check_seed
from .result import CheckResult


def check_arguments(fn: object, signature: str, seed: object) -> int:
    """Validate a checker's own arguments and return the seed as an int.

    Args:
        fn: the reader's function; it must be callable.
        signature: how the function is called, e.g. ``"sgd_step(model, params, x, y, loss_fn, lr)"``.
        seed: the checker's ``seed`` argument, an integer >= 0.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large for torch's generators.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function {signature}, got {fn!r}")
    return check_seed("seed", seed)


def call_student(
    fn: Callable[..., object],
    call: str,
    *args: object,
    explain: Callable[[Exception], CheckResult | None] | None = None,
    **kwargs: object,
) -> tuple[object, CheckResult | None]:
    """``(fn(*args, **kwargs), None)``, or ``(None, hint)`` when ``fn`` raises.

    The hint comes apart from the value, so a function that returns a ``CheckResult`` of
    its own is judged like any other wrong return value.

    Args:
        fn: the reader's function.
        call: how the call reads in a hint, e.g. ``"sgd_step(model, params, x, y, loss_fn, lr)"``.
        *args: the positional arguments of ``fn``.
        explain: the checker's reading of an exception: the hint of the mistake it reveals
            (autograd's message about an in-place update, say), or None for the plain hint.
        **kwargs: the keyword arguments of ``fn``.

    Returns:
        What ``fn`` returned and None, or None and the hint. A function that still raises
        ``NotImplementedError`` (an assignment's stub) is told to write its body.
    """
    try:
        return fn(*args, **kwargs), None
    except NotImplementedError:
        return None, CheckResult.hint(f"{call} raised NotImplementedError: write the function's body")
    except Exception as error:  # any failure of the reader's code is the verdict
        named = explain(error) if explain is not None else None  # a hint is falsy: test for None
        if named is None:
            named = CheckResult.hint(f"{call} raised {type(error).__name__}: {error}")
        return None, named
