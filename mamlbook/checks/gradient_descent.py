"""Checkers for the reader's gradient descent and mean-squared-error gradient (chapter 1).

Both are NumPy only. Each computes the exact answer of small problems drawn from
``seed`` (0, the default, gives the chapter's problems; a grader may pass another),
then runs the reader's function on copies of the inputs through
``call_student``, so that an exception or a wrong type
becomes a hint. When the answers differ, it computes what the classic mistakes would
give on the same problem and names the one that matches:

- ``check_gradient_descent``: climbing instead of descending (a ``+`` in the update),
  one step too few or too many, the start ``w0`` left out, only the last point
  returned, the caller's ``w0`` changed in place, one array updated in place and
  stored at every step;
- ``check_linear_regression_gradient``: the sum instead of the mean (K times too
  large), the factor 2 of the square forgotten, the residual's sign reversed, the
  factor ``x_i`` of the slope's derivative forgotten, the two components swapped.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ._problems import describe
from ._student import call_student, check_arguments
from .result import CheckResult

_TOLERANCE = {"rtol": 1e-9, "atol": 1e-12}

# (curvature matrix A, minimum c, start w0, lr, steps) of grad_fn(w) = A (w - c): seed 0's problems.
_DESCENT_PROBLEMS = (
    (np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([1.0, -1.0]), np.array([3.0, 2.0]), 0.2, 4),
    (np.array([[4.0]]), np.array([3.0]), np.array([0.0]), 0.1, 3),
    (np.array([[1.0, 0.0], [0.0, 3.0]]), np.array([0.0, 0.0]), np.array([1.0, 1.0]), 0.3, 0),
)

_GRADIENT_HINTS = {
    "sum": "the gradient is K times too large: the loss is the mean over the K points, not the sum",
    "no_two": "the gradient is half the right size: the derivative of r ** 2 is 2 r",
    "sum_no_two": (
        "the gradient is K / 2 times too large: take the mean, not the sum, and keep the 2 of r ** 2"
    ),
    "sign": "the gradient has the wrong sign: the residual is prediction - target, w * x + b - y",
    "no_x": "dL/dw is wrong: by the chain rule, each residual is multiplied by its input x_i",
    "swapped": "the components are swapped: return [dL/dw, dL/db], in the order of params = [w, b]",
}


def check_gradient_descent(fn: Callable[..., object], *, seed: int = 0) -> CheckResult:
    """Check ``fn(grad_fn, w0, lr, steps)``: plain gradient descent that returns every iterate.

    Expected behaviour: starting at ``w0`` (a NumPy array of any shape), take ``steps``
    updates ``w <- w - lr * grad_fn(w)`` and return the ``(steps + 1, *w0.shape)`` array
    of iterates ``w0, w1, ..., w_steps``, without changing the caller's ``w0``. It is run
    on three quadratic bowls (2, 1 and 2 dimensions; 4, 3 and 0 steps).

    Args:
        fn: the reader's function.
        seed: chooses the bowls and the starts; 0 gives the chapter's.

    Returns:
        A passing verdict, or a hint naming the mistake.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, "fn(grad_fn, w0, lr, steps)", seed)
    problems = _descent_problems(seed)
    for curvature, minimum, w0, lr, steps in problems:
        verdict = _check_descent_problem(fn, _quadratic_gradient(curvature, minimum), w0, lr, steps)
        if verdict is not None:
            return verdict
    return CheckResult.correct(
        "gradient descent returns w0 and every iterate, leaves w0 unchanged "
        f"(checked on {len(problems)} quadratics, 0 to 4 steps)"
    )


def _descent_problems(seed: int) -> tuple[tuple, ...]:
    """The chapter's quadratics for seed 0, else bowls of the same sizes, learning rates and
    numbers of steps with curvatures, minima and starts drawn from ``seed``."""
    if seed == 0:
        return _DESCENT_PROBLEMS
    rng = np.random.default_rng(seed)
    problems = []
    for _, minimum, _, lr, steps in _DESCENT_PROBLEMS:
        dim = minimum.shape[0]
        coupling = rng.uniform(-0.5, 0.5) * (1 - np.eye(dim))  # off the diagonal, small: positive definite
        curvature = np.diag(rng.uniform(1.0, 4.0, dim)) + coupling
        problems.append((curvature, rng.uniform(-2.0, 2.0, dim), rng.uniform(-3.0, 3.0, dim), lr, steps))
    return tuple(problems)


def _quadratic_gradient(curvature: np.ndarray, minimum: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``grad_fn(w) = curvature @ (w - minimum)``, the gradient of a quadratic bowl, as a new array."""

    def grad_fn(w: np.ndarray) -> np.ndarray:
        return curvature @ (np.asarray(w, dtype=float) - minimum)

    return grad_fn


def _check_descent_problem(
    fn: Callable[..., object], grad_fn: Callable, w0: np.ndarray, lr: float, steps: int
) -> CheckResult | None:
    """None when ``fn`` is right on this problem, else the hint for its mistake."""
    descent = _iterates(grad_fn, w0, lr, steps, sign=-1.0)  # the answers first, on the checker's w0
    ascent = _iterates(grad_fn, w0, lr, steps, sign=1.0)
    start = w0.copy()
    returned, hint = call_student(fn, "fn(grad_fn, w0, lr, steps)", grad_fn, start, lr, steps)
    if hint is not None:
        return CheckResult.hint(f"{hint.message} (w0 was {w0!r})")
    if not np.array_equal(start, w0):
        return CheckResult.hint(
            "the function changed the caller's w0 in place (w -= ... on w = w0 is the same array). "
            "Start from a copy, w = w0.copy(), or write w = w - lr * grad_fn(w), which makes a new array"
        )
    iterates = _as_float_array(returned)
    if iterates is None:
        return CheckResult.hint(
            f"return an array of iterates (a list of arrays will do), got {describe(returned)}"
        )
    if iterates.shape != descent.shape:
        return CheckResult.hint(_shape_hint(iterates, descent))
    if steps > 1 and np.allclose(iterates[1:], iterates[-1], **_TOLERANCE):
        return CheckResult.hint(
            "every row holds the same point: the list keeps one array that is updated in place "
            "(w -= ...). Append a copy, or write w = w - lr * grad_fn(w)"
        )
    if np.allclose(iterates, descent, **_TOLERANCE):
        return None
    if np.allclose(iterates, ascent, **_TOLERANCE):
        return CheckResult.hint("the iterates climb the loss: the update must subtract lr * grad_fn(w)")
    if not np.allclose(iterates[0], w0, **_TOLERANCE):
        return CheckResult.hint("the first row must be w0 itself")
    step = next(s for s in range(1, steps + 1) if not np.allclose(iterates[s], descent[s], **_TOLERANCE))
    return CheckResult.hint(
        f"w{step} differs from w{step - 1} - lr * grad_fn(w{step - 1}) (lr={lr}, {steps} steps from "
        f"w0={w0.tolist()}): each row must be the previous one minus lr times its gradient"
    )


def _as_float_array(value: object) -> np.ndarray | None:
    """``value`` as an array of floats, or None when it is not numbers (a string, None, a dict,
    complex numbers, a ragged list)."""
    if value is None or isinstance(value, (str, bytes, dict)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # complex numbers cast to float warn: refuse them instead
            return np.asarray(value, dtype=float)
    except Exception:  # converting the reader's object runs its code: any failure means "not numbers"
        return None


def _iterates(grad_fn: Callable, w0: np.ndarray, lr: float, steps: int, *, sign: float) -> np.ndarray:
    """``(steps + 1, *w0.shape)`` iterates of w <- w + sign * lr * grad_fn(w)."""
    iterates = [w0.astype(float)]
    for _ in range(steps):
        iterates.append(iterates[-1] + sign * lr * grad_fn(iterates[-1]))
    return np.stack(iterates)


def _shape_hint(iterates: np.ndarray, expected: np.ndarray) -> str:
    """The hint for iterates of the wrong shape, compared with the ``expected`` iterates."""
    rows, point_shape = expected.shape[0], expected.shape[1:]
    if iterates.shape == point_shape:
        return "the function returned a single point; return every iterate, w0 first: shape (steps + 1, ...)"
    if iterates.shape == (rows - 1, *point_shape):
        if np.allclose(iterates, expected[1:], **_TOLERANCE):
            return "the first row must be the start w0: return w0, w1, ..., w_steps (steps + 1 rows)"
        return "one step too few: return w0 and then all `steps` iterates (steps + 1 rows)"
    if iterates.shape == (rows + 1, *point_shape):
        return "one row too many: `steps` updates give steps + 1 rows, w0 included"
    return (
        f"expected an array of shape (steps + 1, *w0.shape) = {expected.shape} for steps={rows - 1}, "
        f"got shape {iterates.shape}"
    )


def check_linear_regression_gradient(fn: Callable[..., object], *, seed: int = 0) -> CheckResult:
    """Check ``fn(params, x, y)``: the gradient of the mean squared error of a line.

    Expected behaviour: for ``params = np.array([w, b])`` and ``(K,)`` arrays ``x`` and
    ``y``, return the ``(2,)`` array ``[dL/dw, dL/db]`` of
    L(w, b) = (1/K) sum_i (w x_i + b - y_i) ** 2, without changing the arguments. It is
    run on two data sets, of K = 5 and 8 points near a line.

    Args:
        fn: the reader's function.
        seed: chooses the data and the params; 0 gives the chapter's.

    Returns:
        A passing verdict, or a hint naming the mistake.

    Raises:
        TypeError: ``fn`` is not callable, or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, "fn(params, x, y)", seed)
    rng = np.random.default_rng(seed + 1)  # seed 0: the chapter's data, drawn from 1
    params = np.array([-0.7, 0.9]) if seed == 0 else rng.uniform(-1.5, 1.5, 2)
    for num_points in (5, 8):
        x = rng.uniform(-2.0, 2.0, num_points)
        y = 1.5 * x - 0.5 + rng.normal(0.0, 0.3, num_points)
        verdict = _check_gradient_problem(fn, params, x, y)
        if verdict is not None:
            return verdict
    return CheckResult.correct("the gradient of the mean squared error matches on 2 data sets (K = 5 and 8)")


def _check_gradient_problem(
    fn: Callable[..., object], params: np.ndarray, x: np.ndarray, y: np.ndarray
) -> CheckResult | None:
    """None when ``fn`` is right on this data set, else the hint for its mistake."""
    residuals = params[0] * x + params[1] - y  # (K,), the answer first, on the checker's arrays
    exact = np.array([np.mean(2 * residuals * x), np.mean(2 * residuals)])
    arguments = (params.copy(), x.copy(), y.copy())
    returned, hint = call_student(fn, "fn(params, x, y)", *arguments)
    if hint is not None:
        return hint
    if not all(np.array_equal(given, kept) for given, kept in zip(arguments, (params, x, y), strict=True)):
        return CheckResult.hint("the function changed params, x or y in place: compute new arrays instead")
    gradient = _as_float_array(returned)
    if gradient is None:
        return CheckResult.hint(f"return the gradient as an array [dL/dw, dL/db], got {describe(returned)}")
    if gradient.shape != (2,):
        return CheckResult.hint(
            f"return an array of shape (2,), [dL/dw, dL/db], got shape {gradient.shape}; "
            "each component is a single number (a mean over the K points)"
        )
    if np.allclose(gradient, exact, **_TOLERANCE):
        return None
    num_points = len(x)
    mistakes = {
        "sum": num_points * exact,
        "no_two": exact / 2,
        "sum_no_two": num_points * exact / 2,
        "sign": -exact,
        "no_x": np.array([exact[1], exact[1]]),
        "swapped": exact[::-1],
    }
    for mistake, wrong in mistakes.items():
        if np.allclose(gradient, wrong, **_TOLERANCE):
            return CheckResult.hint(_GRADIENT_HINTS[mistake])
    return CheckResult.hint(
        f"the gradient differs at params={params.tolist()} with K={num_points} points: "
        "check each partial derivative of the mean of (w * x_i + b - y_i) ** 2"
    )
