"""The chapter-1 checkers accept correct functions and name each classic mistake; the
loss surface used by the chapters' contour plots is the mean squared error."""

from __future__ import annotations

import numpy as np
import pytest

import mamlbook as mb
from mamlbook.checks import check_gradient_descent, check_linear_regression_gradient

# ---- gradient descent: fn(grad_fn, w0, lr, steps) -> (steps + 1, *w0.shape) iterates


def descent_with_list(grad_fn, w0, lr, steps):
    iterates = [w0]
    for _ in range(steps):
        iterates.append(iterates[-1] - lr * grad_fn(iterates[-1]))
    return np.array(iterates)


def descent_preallocated(grad_fn, w0, lr, steps):
    iterates = np.empty((steps + 1, *np.shape(w0)))
    iterates[0] = w0
    for step in range(steps):
        iterates[step + 1] = iterates[step] - lr * grad_fn(iterates[step])
    return iterates


def descent_uphill(grad_fn, w0, lr, steps):
    iterates = [w0]
    for _ in range(steps):
        iterates.append(iterates[-1] + lr * grad_fn(iterates[-1]))
    return np.array(iterates)


def descent_one_step_short(grad_fn, w0, lr, steps):
    return descent_with_list(grad_fn, w0, lr, steps)[:-1] if steps else np.array([w0])


def descent_without_w0(grad_fn, w0, lr, steps):
    w, iterates = w0, []
    for _ in range(steps):
        w = w - lr * grad_fn(w)
        iterates.append(w)
    return np.array(iterates)


def descent_one_step_too_many(grad_fn, w0, lr, steps):
    return descent_with_list(grad_fn, w0, lr, steps + 1)


def descent_last_point_only(grad_fn, w0, lr, steps):
    w = w0
    for _ in range(steps):
        w = w - lr * grad_fn(w)
    return w


def descent_mutating_w0(grad_fn, w0, lr, steps):
    w = w0
    iterates = [w.copy()]
    for _ in range(steps):
        w -= lr * grad_fn(w)
        iterates.append(w.copy())
    return np.array(iterates)


def descent_storing_one_array(grad_fn, w0, lr, steps):
    w = w0.copy()
    iterates = [w0.copy()]
    for _ in range(steps):
        w -= lr * grad_fn(w)
        iterates.append(w)
    return np.array(iterates)


def descent_with_fixed_lr(grad_fn, w0, lr, steps):
    return descent_with_list(grad_fn, w0, 0.05, steps)


def descent_that_fails(grad_fn, w0, lr, steps):
    return grad_fn(w0, lr)


@pytest.mark.parametrize("fn", [descent_with_list, descent_preallocated])
def test_check_gradient_descent_accepts_correct_versions(fn, checker_seed):
    verdict = check_gradient_descent(fn, seed=checker_seed)
    assert verdict.passed, verdict.message
    assert str(verdict).startswith("correct:")


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (descent_uphill, "climb"),
        (descent_one_step_short, "one step too few"),
        (descent_without_w0, "first row must be the start w0"),
        (descent_one_step_too_many, "one row too many"),
        (descent_last_point_only, "single point"),
        (descent_mutating_w0, "changed the caller's w0 in place"),
        (descent_storing_one_array, "every row holds the same point"),
        (descent_with_fixed_lr, "minus lr times its gradient"),
        (descent_that_fails, "raised TypeError"),
    ],
)
def test_check_gradient_descent_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_gradient_descent(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message
    assert str(verdict).startswith("not yet:")


def test_check_gradient_descent_leaves_no_trace_of_a_mutating_function_between_calls():
    first, second = check_gradient_descent(descent_mutating_w0), check_gradient_descent(descent_mutating_w0)
    assert first == second
    assert check_gradient_descent(descent_with_list).passed


def test_check_gradient_descent_rejects_a_non_function():
    with pytest.raises(TypeError, match="fn must be a function"):
        check_gradient_descent([1.0, 2.0])


# ---- the gradient of L(w, b) = mean_i (w x_i + b - y_i) ** 2: fn(params, x, y) -> (2,)


def gradient(params, x, y):
    residuals = params[0] * x + params[1] - y
    return np.array([np.mean(2 * residuals * x), np.mean(2 * residuals)])


def gradient_with_design_matrix(params, x, y):
    design = np.stack([x, np.ones_like(x)], axis=1)  # (K, 2)
    return 2 * design.T @ (design @ params - y) / len(x)


def gradient_of_the_sum(params, x, y):
    return gradient(params, x, y) * len(x)


def gradient_without_the_two(params, x, y):
    return gradient(params, x, y) / 2


def gradient_of_the_sum_without_the_two(params, x, y):
    return gradient(params, x, y) * len(x) / 2


def gradient_with_reversed_residual(params, x, y):
    residuals = y - (params[0] * x + params[1])
    return np.array([np.mean(2 * residuals * x), np.mean(2 * residuals)])


def gradient_without_x(params, x, y):
    residuals = params[0] * x + params[1] - y
    return np.array([np.mean(2 * residuals), np.mean(2 * residuals)])


def gradient_swapped(params, x, y):
    return gradient(params, x, y)[::-1]


def gradient_as_column(params, x, y):
    return gradient(params, x, y)[:, None]


def gradient_mutating_params(params, x, y):
    params -= 0.0 * params + 1.0
    return gradient(params + 1.0, x, y)


def gradient_with_other_mistake(params, x, y):
    return gradient(params, x, y) + np.array([0.1, 0.0])


@pytest.mark.parametrize("fn", [gradient, gradient_with_design_matrix])
def test_check_linear_regression_gradient_accepts_correct_versions(fn, checker_seed):
    verdict = check_linear_regression_gradient(fn, seed=checker_seed)
    assert verdict.passed, verdict.message


@pytest.mark.parametrize(
    ("fn", "keyword"),
    [
        (gradient_of_the_sum, "K times too large"),
        (gradient_without_the_two, "half the right size"),
        (gradient_of_the_sum_without_the_two, "K / 2 times too large"),
        (gradient_with_reversed_residual, "wrong sign"),
        (gradient_without_x, "multiplied by its input x_i"),
        (gradient_swapped, "swapped"),
        (gradient_as_column, "shape (2,)"),
        (gradient_mutating_params, "in place"),
        (gradient_with_other_mistake, "check each partial derivative"),
    ],
)
def test_check_linear_regression_gradient_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_linear_regression_gradient(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message


def test_check_linear_regression_gradient_rejects_a_non_function():
    with pytest.raises(TypeError, match="fn must be a function"):
        check_linear_regression_gradient("gradient")


# ---- the loss surface drawn by the chapters


def test_linear_regression_surface_is_the_mean_squared_error_on_a_grid():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7)
    w, b = np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-2, 2, 3))  # (3, 4) each
    losses = mb.plotting.linear_regression_surface(x, y)(w, b)
    assert losses.shape == (3, 4)
    assert np.isclose(losses[2, 1], np.mean((w[2, 1] * x + b[2, 1] - y) ** 2))


def test_linear_regression_surface_rejects_mismatched_data():
    with pytest.raises(ValueError, match="x and y must be"):
        mb.plotting.linear_regression_surface(np.zeros(3), np.zeros(4))


def test_path_plots_reject_paths_of_the_wrong_shape():
    surface = mb.plotting.linear_regression_surface(np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"paths\['bad'\] must be an array of shape \(n, 2\)"):
        mb.plotting.plot_path_on_contours(surface, {"bad": np.zeros((3, 3))}, bounds=((0, 1), (0, 1)))


def test_task_family_landscape_rejects_a_path_for_an_unknown_task():
    surface = mb.plotting.linear_regression_surface(np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    paths = {"start": {"T9": np.zeros((2, 2))}}
    with pytest.raises(ValueError, match="names task 'T9', which is not in surfaces"):
        mb.plotting.plot_task_family_landscape({"T1": surface}, paths, bounds=((0, 1), (0, 1)))
