"""Checkers for chapter 6: the reader's episode sampler and classification accuracy.

Each checker runs the reader's function on small problems drawn from ``seed`` (0, the
default, is the chapter's; a grader may pass another), on copies of the inputs, and
names the classic mistake that explains a wrong answer:

- ``check_sample_episode``: the original class ids returned as labels, labels given by
  class id modulo N, the chosen classes labelled in sorted order, images or classes
  drawn with replacement (an image twice, or in both sets), the generator ignored (the
  global random number generator used instead, or the same task every time), the same
  classes or the same examples of a class in every task, wrong counts per label;
- ``check_accuracy``: the argmax over the wrong dimension, a count or a percentage
  instead of a fraction, the error rate, the argmin, softmax probabilities in place of
  predictions, one accuracy pooled over the tasks, one value per query image.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from ._student import call_student, check_arguments
from .result import CheckResult

# sample_episode(labels, n_way, k_shot, n_query, generator)

_EPISODE_CALL = "sample_episode(labels, n_way, k_shot, n_query, generator)"
_EPISODE_SETTINGS = ((3, 2, 1), (5, 1, 3))  # (n_way, k_shot, n_query); the first is drawn many times
_DRAWS = 300  # tasks drawn to see whether labels are tied to classes

_EPISODE_HINTS = {
    "class_ids": (
        "the labels are the original class ids: relabel the N chosen classes 0..N-1, "
        "in the random order they were drawn"
    ),
    "modulo": (
        "the labels are the class ids modulo N, so two classes can share a label and a label "
        "stays tied to its classes: give the N chosen classes the labels 0..N-1 in the random "
        "order they were drawn"
    ),
    "sorted": (
        "the labels follow the order of the class ids (the chosen classes sorted, as "
        "labels.unique() or a mask returns them), so a label says which class it is: label "
        "the chosen classes in the random order they were drawn"
    ),
    "tied": (
        "a class gets some labels more often than others over many tasks, so a label carries "
        "information about its class: label the chosen classes in a new random order each task"
    ),
    "replacement": (
        "an image appears twice in one task ({where}): draw the k_shot + n_query examples of "
        "a class without replacement (torch.randperm, not torch.randint or random.choices) "
        "and split them between the support and the query set"
    ),
    "duplicate_classes": ("two labels stand for the same class: draw the N classes without replacement"),
    "mixed_classes": (
        "the images of one label come from several classes: every image of a label, in the "
        "support and the query set, must be of the one class that label stands for"
    ),
    "global_rng": (
        "two calls with generators in the same state gave different tasks: the function "
        "ignores generator and draws from a global random number generator; pass "
        "generator=generator to every torch.randperm (Python's random has no generator)"
    ),
    "fixed": (
        "every generator gives the same task: draw with the generator you are given, "
        "not with a new one of your own"
    ),
    "same_classes": "over many tasks only {seen} of the {total} classes appear: draw the N classes at random",
    "same_examples": (
        "a class gives the same {which} images in every task: draw its examples at random "
        "among all its images"
    ),
}


@contextmanager
def _own_random_state() -> Iterator[None]:
    """Restore torch's global CPU generator and Python's ``random`` on exit."""
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(state)


def _episode_labels(seed: int) -> torch.Tensor:
    """``(D,)`` class ids of a small dataset: 8 classes with ids scattered in 10..109, of 5 to 9
    images each (not all alike), in shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    ids = 10 + torch.randperm(100, generator=generator)[:8]
    sizes = 5 + torch.randperm(8, generator=generator) % 5  # 5, 6, 7, 8, 9, 5, 6, 7 in some order
    labels = ids.repeat_interleave(sizes)
    return labels[torch.randperm(len(labels), generator=generator)]


def _draw(fn: Callable, labels: torch.Tensor, setting: tuple, generator: torch.Generator):
    """``(the function's return, None)`` on a copy of ``labels``, or ``(None, hint)``."""
    given = labels.clone()
    returned, hint = call_student(fn, _EPISODE_CALL, given, *setting, generator)
    if hint is None and not torch.equal(given, labels):
        hint = CheckResult.hint(
            "the function changed labels in place: leave the dataset's labels as they are"
        )
    return returned, hint


def _episode_shape_hint(returned: object, setting: tuple) -> CheckResult | None:
    """A hint unless ``returned`` is four 1-d integer tensors of the right lengths."""
    n_way, k_shot, n_query = setting
    if not isinstance(returned, (tuple, list)) or len(returned) != 4:
        return CheckResult.hint(
            f"return four tensors, (support, support_y, query, query_y), got {returned!r:.80}"
        )
    names = ("support", "support_y", "query", "query_y")
    sizes = ((k_shot, "K"), (k_shot, "K"), (n_query, "q"), (n_query, "q"))
    for name, tensor, (per_class, letter) in zip(names, returned, sizes, strict=True):
        if not isinstance(tensor, torch.Tensor):
            return CheckResult.hint(f"{name} must be a tensor, got {type(tensor).__name__}")
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            return CheckResult.hint(f"{name} must hold integers (torch.long), got {tensor.dtype}")
        if tensor.shape != (n_way * per_class,):
            return CheckResult.hint(
                f"{name} must have shape (N*{letter},) = ({n_way * per_class},) for n_way={n_way}, "
                f"k_shot={k_shot}, n_query={n_query}, got {tuple(tensor.shape)}; return the four "
                "tensors flat, in the order (support, support_y, query, query_y)"
            )
    return None


def _label_hint(labels, support, support_y, query, query_y, n_way) -> str | None:
    """The key of the hint on the labels of one task, or None when they are right."""
    classes_s, classes_q = labels[support], labels[query]
    if torch.equal(support_y, classes_s) and torch.equal(query_y, classes_q):
        return "class_ids"
    modulo = torch.equal(support_y, classes_s % n_way) and torch.equal(query_y, classes_q % n_way)
    every_y = torch.cat([support_y, query_y])
    if bool(((every_y < 0) | (every_y >= n_way)).any()):
        return "modulo" if modulo else "range"
    class_of_label = [
        torch.cat([classes_s[support_y == y], classes_q[query_y == y]]).unique() for y in range(n_way)
    ]
    if any(len(classes) > 1 for classes in class_of_label):
        return "modulo" if modulo else "mixed_classes"
    if len(torch.cat(class_of_label).unique()) < n_way:
        return "duplicate_classes"
    return None


def _episode_hint(returned: object, labels: torch.Tensor, setting: tuple) -> CheckResult | None:
    """None when ``returned`` is a valid task of ``setting`` drawn from ``labels``, else a hint."""
    hint = _episode_shape_hint(returned, setting)
    if hint is not None:
        return hint
    n_way, k_shot, n_query = setting
    support, support_y, query, query_y = (tensor.detach().cpu().long() for tensor in returned)
    images = torch.cat([support, query])
    if bool(((images < 0) | (images >= len(labels))).any()):
        return CheckResult.hint(f"support and query must be indices into labels, 0..{len(labels) - 1}")
    key = _label_hint(labels, support, support_y, query, query_y, n_way)
    if key == "range":
        found = sorted(set(torch.cat([support_y, query_y]).tolist()))
        return CheckResult.hint(f"the labels must be 0..N-1 = 0..{n_way - 1}, got {found}")
    if key is not None:
        return CheckResult.hint(_EPISODE_HINTS[key])
    support_counts = torch.bincount(support_y, minlength=n_way).tolist()
    query_counts = torch.bincount(query_y, minlength=n_way).tolist()
    if support_counts != [k_shot] * n_way or query_counts != [n_query] * n_way:
        return CheckResult.hint(
            f"each label needs k_shot={k_shot} support and n_query={n_query} query images; the labels "
            f"0..{n_way - 1} have {support_counts} and {query_counts}"
        )
    for where, indices in (
        ("in the support set", support),
        ("in the query set", query),
        ("in both sets", images),
    ):
        if len(indices.unique()) < len(indices):
            return CheckResult.hint(_EPISODE_HINTS["replacement"].format(where=where))
    return None


def _settings_hint(fn: Callable, labels: torch.Tensor, seed: int) -> CheckResult | None:
    """A hint when one task of each setting is not a valid task."""
    for offset, setting in enumerate(_EPISODE_SETTINGS):
        returned, hint = _draw(fn, labels, setting, torch.Generator().manual_seed(seed + offset))
        if hint is None:
            hint = _episode_hint(returned, labels, setting)
        if hint is not None:
            return hint
    return None


def _task(fn: Callable, labels: torch.Tensor, global_seed: int, generator_seed: int) -> tuple | CheckResult:
    """One task of the second setting, with the global generators seeded ``global_seed``."""
    torch.default_generator.manual_seed(global_seed)
    random.seed(global_seed)
    setting = _EPISODE_SETTINGS[1]
    returned, hint = _draw(fn, labels, setting, torch.Generator().manual_seed(generator_seed))
    if hint is None:
        hint = _episode_hint(returned, labels, setting)
    return hint if hint is not None else tuple(tensor.detach().cpu().long() for tensor in returned)


def _generator_hint(fn: Callable, labels: torch.Tensor, seed: int) -> CheckResult | None:
    """A hint when the task does not follow ``generator``: another global state, another task;
    or the same task from three generators."""
    tasks = [
        _task(fn, labels, *seeds)
        for seeds in ((seed, seed), (seed + 1, seed), (seed + 1, seed + 1), (seed + 1, seed + 2))
    ]
    hint = next((task for task in tasks if isinstance(task, CheckResult)), None)
    if hint is not None:
        return hint
    same = [all(map(torch.equal, tasks[0], task)) for task in tasks[1:]]
    if not same[0]:
        return CheckResult.hint(_EPISODE_HINTS["global_rng"])
    if all(same):
        return CheckResult.hint(_EPISODE_HINTS["fixed"])
    return None


def _tie_hint(fn: Callable, labels: torch.Tensor, seed: int) -> CheckResult | None:
    """A hint when, over many tasks, labels follow class ids or classes and examples repeat."""
    setting = _EPISODE_SETTINGS[0]
    n_way, k_shot, n_query = setting
    generator, classes = torch.Generator().manual_seed(seed + 2), labels.unique()  # sorted ids
    label_sums, appearances = torch.zeros(len(classes)), torch.zeros(len(classes))
    ordered, modulo, seen = [0, 0], 0, (set(), set())  # tasks labelled in increasing, decreasing id order
    for _ in range(_DRAWS):
        returned, hint = _draw(fn, labels, setting, generator)
        if hint is None:
            hint = _episode_hint(returned, labels, setting)
        if hint is not None:
            return hint
        support, support_y, query, _ = (tensor.detach().cpu().long() for tensor in returned)
        chosen = torch.stack([labels[support[support_y == y][0]] for y in range(n_way)])  # class of label y
        steps = chosen.diff()
        ordered[0] += bool((steps > 0).all())
        ordered[1] += bool((steps < 0).all())
        modulo += torch.equal(chosen % n_way, torch.arange(n_way))
        index = torch.searchsorted(classes, chosen)
        label_sums[index] += torch.arange(n_way, dtype=torch.float32)
        appearances[index] += 1
        seen[0].update(support.tolist())
        seen[1].update(query.tolist())
    if int((appearances > 0).sum()) < len(classes):
        return CheckResult.hint(
            _EPISODE_HINTS["same_classes"].format(seen=int((appearances > 0).sum()), total=len(classes))
        )
    if _DRAWS in ordered:
        return CheckResult.hint(_EPISODE_HINTS["sorted"])
    if modulo == _DRAWS:
        return CheckResult.hint(_EPISODE_HINTS["modulo"])
    if float((label_sums / appearances - (n_way - 1) / 2).abs().max()) > 0.5:
        return CheckResult.hint(_EPISODE_HINTS["tied"])
    for which, images, per_class in (("support", seen[0], k_shot), ("query", seen[1], n_query)):
        used = torch.searchsorted(classes, labels[sorted(images)])
        if bool((torch.bincount(used, minlength=len(classes)) <= per_class).any()):
            return CheckResult.hint(_EPISODE_HINTS["same_examples"].format(which=which))
    return None


def check_sample_episode(fn: Callable[..., tuple], *, seed: int = 0) -> CheckResult:
    """Check a reader's ``sample_episode(labels, n_way, k_shot, n_query, generator)``.

    For ``labels``, the ``(D,)`` class ids of a dataset (any integers, in any order), the
    function must draw one N-way K-shot task with ``generator``: N distinct classes, and
    ``k_shot + n_query`` distinct images of each, and return ``(support, support_y, query,
    query_y)``: the indices into ``labels`` of the support images ``(N*K,)`` and their labels
    ``(N*K,)``, and the same for the query images ``(N*q,)``, as integer tensors. The labels
    are 0..N-1, given to the chosen classes in a random order, so that over many tasks a
    label says nothing about its class. The function must leave ``labels`` unchanged, and
    the task must depend on ``generator`` alone: the same state gives the same task.

    It is run on a dataset of 8 classes of 5 to 9 images drawn from ``seed``, for
    ``(n_way, k_shot, n_query) = (3, 2, 2)`` and ``(5, 1, 3)``, with the global generators
    (torch's and Python's ``random``) in several states, then for 300 tasks to see whether
    the labels follow the classes. The global generators are restored afterwards.

    Args:
        fn: the function to check.
        seed: chooses the dataset and the generators' seeds.

    Returns:
        The verdict, correct or a hint that names the mistake.

    Raises:
        TypeError: ``fn`` is not callable or ``seed`` is not an integer.
        ValueError: ``seed`` is negative or too large.
    """
    seed = check_arguments(fn, _EPISODE_CALL, seed)
    labels = _episode_labels(seed)
    with _own_random_state():
        for check in (_settings_hint, _generator_hint, _tie_hint):
            hint = check(fn, labels, seed)
            if hint is not None:
                return hint
    return CheckResult.correct(
        "each task has N distinct classes, K + q distinct images of each, labels 0..N-1 in a random "
        "order, and follows the generator"
    )


# accuracy(logits, labels)

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
        pooled = _close(value.double(), expected.mean()) or _close(value.double(), 100 * expected.mean())
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
        return CheckResult.hint(
            f"return a tensor of shape (T,) = ({len(expected)},), got {type(value).__name__}"
        )
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
        given = (logits.clone(), labels.clone())
        value, hint = call_student(fn, _ACCURACY_CALL, *given)
        if hint is None and not (torch.equal(given[0], logits) and torch.equal(given[1], labels)):
            hint = CheckResult.hint("the function changed logits or labels in place: compute in new tensors")
        if hint is None:
            hint = _accuracy_value_hint(value, logits, labels)
        if hint is not None:
            return hint
    return CheckResult.correct(
        "each task's accuracy is the fraction of its query images whose argmax is the label"
    )
