"""Checker for chapter 6's classification accuracy, ``accuracy(logits, labels) -> (T,)``.

The checker runs the reader's function on small problems drawn from ``seed`` (0, the default,
is the chapter's; a grader may pass another), on copies of the inputs, and names the classic
mistake that explains a wrong answer: the argmax over the wrong dimension, a count or a
percentage instead of a fraction, the error rate, the argmin, softmax probabilities in place of
predictions, one accuracy pooled over the tasks, one value per query image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._problems import as_float64, copied, describe, same
from ._student import call_student, check_arguments
from .result import CheckResult

_ACCURACY_CALL = "accuracy(logits, labels)"
_ACCURACY_PROBLEMS = ((4, 5, 1), (3, 4, 3))  # (T, N, q): M = N * q query images; the first has M == N
_ACCURACY_TOLERANCE = 1e-3  # float16 fractions pass; the mistakes differ by at least 1/M

_ACCURACY_HINTS = {
    "wrong_dim": (
        "the argmax is over the query images, dim 1: a prediction is the class with the largest "
        "logit, the argmax over the last dim, N"
    ),
    "count": "the accuracies are counts of correct predictions: divide by the number of query images M",
    "percent": "the accuracies are percentages: return fractions in [0, 1]",
    "error_rate": "the values are error rates, the fraction of wrong predictions: count the right ones",
    "argmin": "the prediction is the class with the smallest logit: take the argmax",
    "true_probability": (
        "the values are the mean softmax probability of the true class: count the predictions "
        "(argmax of the logits) that equal the label"
    ),
    "confidence": (
        "the values are the mean of the largest softmax probability: compare the predicted "
        "class, the argmax, with the label"
    ),
    "zeros": (
        "no prediction is counted right: compare the index of the largest logit (its argmax) "
        "with the label, not a logit's or a probability's value"
    ),
    "pooled": (
        "every task gets the accuracy of all tasks pooled: average over each task's query "
        "images, dim 1, one value per task"
    ),
}


def _accuracy_problem(generator: torch.Generator, num_tasks: int, n_way: int, n_query: int):
    """``(T, M, N)`` float32 logits and ``(T, M)`` labels of which task t classifies a chosen,
    distinct number of query images right (1..M-1), with a margin: no ties."""
    size = n_way * n_query
    labels = torch.stack(
        [torch.arange(size)[torch.randperm(size, generator=generator)] % n_way for _ in range(num_tasks)]
    )
    right = torch.zeros(num_tasks, size, dtype=torch.bool)
    for task, count in enumerate((1 + torch.randperm(size - 1, generator=generator)[:num_tasks]).tolist()):
        right[task, torch.randperm(size, generator=generator)[:count]] = True
    other = (labels + torch.randint(1, n_way, labels.shape, generator=generator)) % n_way  # a wrong class
    predicted = torch.where(right, labels, other)  # (T, M)
    logits = torch.randn(num_tasks, size, n_way, generator=generator)
    top = logits.max(dim=-1).values + 0.5 + torch.rand(num_tasks, size, generator=generator)
    logits.scatter_(-1, predicted[..., None], top[..., None])  # the predicted class's logit is the largest
    return logits, labels


def _accuracy_mistakes(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each classic mistake returns for these logits, float64, keyed by hint."""
    right = (logits.argmax(-1) == labels).double()  # (T, M)
    accuracy = right.mean(-1)
    probabilities = logits.double().softmax(-1)  # (T, M, N)
    mistakes = {
        "count": right.sum(-1),
        "percent": 100 * accuracy,
        "error_rate": 1 - accuracy,
        "argmin": (logits.argmin(-1) == labels).double().mean(-1),
        "true_probability": probabilities.gather(-1, labels[..., None]).squeeze(-1).mean(-1),
        "confidence": probabilities.max(-1).values.mean(-1),
        "zeros": torch.zeros_like(accuracy),
        "pooled": accuracy.mean().expand_as(accuracy),
    }
    if logits.shape[1] == logits.shape[2]:  # M == N: the argmax over dim 1 compares without error
        mistakes["wrong_dim"] = (logits.argmax(1) == labels).double().mean(-1)
    return mistakes


def _close(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    return actual.shape == expected.shape and bool(
        torch.allclose(actual, expected, rtol=0, atol=_ACCURACY_TOLERANCE)
    )


def _discriminating_problem(generator: torch.Generator, problem: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """A problem on which the right answer and every mistake's answer differ (drawn again if not)."""
    while True:
        logits, labels = _accuracy_problem(generator, *problem)
        answers = [
            (logits.argmax(-1) == labels).double().mean(-1),
            *_accuracy_mistakes(logits, labels).values(),
        ]
        if not any(_close(a, b) for i, a in enumerate(answers) for b in answers[i + 1 :]):
            return logits, labels


def _accuracy_shape_hint(value: torch.Tensor, expected: torch.Tensor, size: int) -> CheckResult:
    """The hint for accuracies of the wrong shape; ``expected`` is ``(T,)``, ``size`` is M."""
    num_tasks = len(expected)
    if value.dim() == 0:
        number = as_float64(value)  # None for a complex number, which .double() would cast with a warning
        pooled = number is not None and (
            _close(number, expected.mean()) or _close(number, 100 * expected.mean())
        )
        why = "the tasks are pooled" if pooled else "one number for all tasks"
        return CheckResult.hint(f"{why}: return one accuracy per task, shape (T,) = ({num_tasks},)")
    if value.shape == (num_tasks, size):
        return CheckResult.hint("one value per query image: average over each task's M query images, dim 1")
    if value.shape == (size,):
        return CheckResult.hint(
            f"one value per query image position, averaged over the tasks: average over each task's "
            f"query images instead, shape (T,) = ({num_tasks},)"
        )
    return CheckResult.hint(
        f"return one accuracy per task, shape (T,) = ({num_tasks},), got {tuple(value.shape)}"
    )


def _accuracy_value_hint(value: object, logits: torch.Tensor, labels: torch.Tensor) -> CheckResult | None:
    """None when ``value`` is each task's fraction of right predictions, else a hint."""
    mistakes = _accuracy_mistakes(logits, labels)
    expected = (logits.argmax(-1) == labels).double().mean(-1)
    if isinstance(value, (list, tuple)):
        return CheckResult.hint(
            "return one tensor of shape (T,), not a list (torch.stack joins per-task values)"
        )
    if not isinstance(value, torch.Tensor):
        return CheckResult.hint(f"return a tensor of shape (T,) = ({len(expected)},), got {describe(value)}")
    if value.shape != expected.shape:
        return _accuracy_shape_hint(value.detach(), expected, labels.shape[1])
    if value.dtype == torch.bool or value.is_complex():
        return CheckResult.hint(f"return fractions as floating-point numbers, got {value.dtype}")
    integers, value = not value.is_floating_point(), value.detach().double()
    if integers and _close(value, mistakes["zeros"]):
        return CheckResult.hint(
            "the accuracies are integers, all 0: an integer division truncates; divide floating-point numbers"
        )
    if _close(value, expected):
        return None
    name = next((name for name, wrong in mistakes.items() if _close(value, wrong)), None)
    if name is not None:
        return CheckResult.hint(_ACCURACY_HINTS[name])
    return CheckResult.hint(
        "the accuracies differ from the fraction of each task's query images whose largest logit is at "
        "their label"
    )


def check_accuracy(fn: Callable[..., torch.Tensor], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``accuracy(logits, labels) -> (T,)``.

    For the ``(T, M, N)`` logits of T tasks' M query images over N classes and their
    ``(T, M)`` labels in 0..N-1, the function must return a ``(T,)`` floating-point tensor:
    each task's fraction of query images whose largest logit is at their label. It must
    leave its inputs unchanged. It is run on two problems drawn from ``seed`` (4 tasks of
    5 query images over 5 classes, 3 tasks of 12 over 4), in which each task classifies a
    different number of images right and no two logits of an image tie, and compared with
    ``mamlbook.tasks.classification_accuracy`` applied to each task.

    Args:
        fn: the function to check.
        seed: chooses the problems.

    Returns:
        The verdict, correct or a hint that names the mistake explaining the numbers.

    Raises:
        TypeError: ``fn`` is not callable or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, _ACCURACY_CALL, seed)
    generator = torch.Generator().manual_seed(seed)
    for problem in _ACCURACY_PROBLEMS:
        logits, labels = _discriminating_problem(generator, problem)
        given = copied((logits, labels))
        value, hint = call_student(fn, _ACCURACY_CALL, *given)
        if hint is None and not same(given, (logits, labels)):
            hint = CheckResult.hint("the function changed logits or labels in place: compute in new tensors")
        if hint is None:
            hint = _accuracy_value_hint(value, logits, labels)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "each task's accuracy is the fraction of its query images whose argmax is the label"
    )
