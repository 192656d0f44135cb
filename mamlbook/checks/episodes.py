"""Checker for chapter 6's episode sampler, ``sample_episode(labels, n_way, k_shot, n_query, generator)``.

The checker runs the reader's function on a small dataset drawn from ``seed`` (0, the default,
is the chapter's; a grader may pass another), on copies of the labels, and names the classic
mistake that explains a wrong task: the original class ids returned as labels, labels given by
class id modulo N, the chosen classes labelled in sorted order, images or classes drawn with
replacement (an image twice, or in both sets), the generator ignored (the global random number
generator used instead, or the same task every time), the same classes or the same examples of
a class in every task, wrong counts per label.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from ._problems import copied, describe, problem_seeds, same
from ._student import call_student, check_arguments
from .result import CheckResult

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


def _draw(
    fn: Callable, labels: torch.Tensor, setting: tuple, generator: torch.Generator
) -> tuple | CheckResult:
    """The task ``fn`` draws from a copy of ``labels``, as four int64 tensors, or the hint of its mistake."""
    given = copied(labels)
    returned, hint = call_student(fn, _EPISODE_CALL, given, *setting, generator)
    if hint is None and not same(given, labels):
        hint = CheckResult.hint(
            "the function changed labels in place: leave the dataset's labels as they are"
        )
    if hint is None:
        hint = _episode_hint(returned, labels, setting)
    return hint if hint is not None else tuple(tensor.detach().cpu().long() for tensor in returned)


def _episode_shape_hint(returned: object, setting: tuple) -> CheckResult | None:
    """A hint unless ``returned`` is four 1-d integer tensors of the right lengths."""
    n_way, k_shot, n_query = setting
    if not isinstance(returned, (tuple, list)) or len(returned) != 4:
        got = (
            f"a {type(returned).__name__} of {len(returned)}"
            if isinstance(returned, (tuple, list))
            else describe(returned)
        )
        return CheckResult.hint(f"return four tensors, (support, support_y, query, query_y), got {got}")
    names = ("support", "support_y", "query", "query_y")
    sizes = ((k_shot, "K"), (k_shot, "K"), (n_query, "q"), (n_query, "q"))
    for name, tensor, (per_class, letter) in zip(names, returned, sizes, strict=True):
        if not isinstance(tensor, torch.Tensor):
            return CheckResult.hint(f"{name} must be a tensor, got {describe(tensor)}")
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


def _settings_hint(fn: Callable, labels: torch.Tensor, seeds: list[int]) -> CheckResult | None:
    """A hint when one task of each setting is not a valid task."""
    for setting, seed in zip(_EPISODE_SETTINGS, seeds, strict=False):
        task = _draw(fn, labels, setting, torch.Generator().manual_seed(seed))
        if isinstance(task, CheckResult):
            return task
    return None


def _task(fn: Callable, labels: torch.Tensor, global_seed: int, generator_seed: int) -> tuple | CheckResult:
    """One task of the second setting, with the global generators seeded ``global_seed``."""
    torch.default_generator.manual_seed(global_seed)
    random.seed(global_seed)
    return _draw(fn, labels, _EPISODE_SETTINGS[1], torch.Generator().manual_seed(generator_seed))


def _generator_hint(fn: Callable, labels: torch.Tensor, seeds: list[int]) -> CheckResult | None:
    """A hint when the task does not follow ``generator``: another global state, another task;
    or the same task from three generators."""
    first, second, third = seeds
    tasks = [
        _task(fn, labels, *pair)
        for pair in ((first, first), (second, first), (second, second), (second, third))
    ]
    hint = next((task for task in tasks if isinstance(task, CheckResult)), None)
    if hint is not None:
        return hint
    same_task = [all(map(torch.equal, tasks[0], task)) for task in tasks[1:]]
    if not same_task[0]:
        return CheckResult.hint(_EPISODE_HINTS["global_rng"])
    if all(same_task):
        return CheckResult.hint(_EPISODE_HINTS["fixed"])
    return None


def _tie_hint(fn: Callable, labels: torch.Tensor, seeds: list[int]) -> CheckResult | None:
    """A hint when, over many tasks, labels follow class ids or classes and examples repeat."""
    setting = _EPISODE_SETTINGS[0]
    n_way, k_shot, n_query = setting
    generator, classes = torch.Generator().manual_seed(seeds[2]), labels.unique()  # sorted ids
    label_sums, appearances = torch.zeros(len(classes)), torch.zeros(len(classes))
    ordered, modulo, seen = [0, 0], 0, (set(), set())  # tasks labelled in increasing, decreasing id order
    for _ in range(_DRAWS):
        task = _draw(fn, labels, setting, generator)
        if isinstance(task, CheckResult):
            return task
        support, support_y, query, _ = task
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
    ``(n_way, k_shot, n_query) = (3, 2, 1)`` and ``(5, 1, 3)``, with the global generators
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
    seeds = problem_seeds(check_arguments(fn, _EPISODE_CALL, seed), 3)  # the dataset, then the generators
    labels = _episode_labels(seeds[0])
    with _own_random_state():
        for check in (_settings_hint, _generator_hint, _tie_hint):
            hint = check(fn, labels, seeds)
            if hint is not None:
                return hint
    return CheckResult.correct(
        "each task has N distinct classes, K + q distinct images of each, labels 0..N-1 in a random "
        "order, and follows the generator"
    )
