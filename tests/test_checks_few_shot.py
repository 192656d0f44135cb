"""The chapter 6 checkers: they accept correct episode samplers and accuracies, and name each
classic mistake. Every wrong implementation is written out here, one function per mistake."""

from __future__ import annotations

import random

import pytest
import torch
from torch.func import vmap

import mamlbook as mb
from mamlbook.checks import check_accuracy, check_sample_episode

# Episodes: sample_episode(labels, n_way, k_shot, n_query, generator) -> support, support_y, query, query_y


def episode_loop(labels, n_way, k_shot, n_query, generator):
    """Classes drawn with randperm, labelled in the order drawn; examples drawn per class."""
    classes = labels.unique()
    chosen = classes[torch.randperm(len(classes), generator=generator)[:n_way]]
    support, query, support_y, query_y = [], [], [], []
    for label, c in enumerate(chosen.tolist()):
        examples = (labels == c).nonzero().squeeze(1)
        examples = examples[torch.randperm(len(examples), generator=generator)[: k_shot + n_query]]
        support += examples[:k_shot].tolist()
        query += examples[k_shot:].tolist()
        support_y += [label] * k_shot
        query_y += [label] * n_query
    return torch.tensor(support), torch.tensor(support_y), torch.tensor(query), torch.tensor(query_y)


def episode_shuffled_dataset(labels, n_way, k_shot, n_query, generator):
    """Correct too: the whole dataset shuffled once, the first images of each chosen class taken;
    int32 indices and labels."""
    order = torch.randperm(len(labels), generator=generator)
    classes = labels.unique()
    chosen = classes[torch.rand(len(classes), generator=generator).argsort()[:n_way]]
    picked = [order[labels[order] == c][: k_shot + n_query] for c in chosen]  # N x (k + q)
    support = torch.cat([images[:k_shot] for images in picked]).int()
    query = torch.cat([images[k_shot:] for images in picked]).int()
    support_y = torch.arange(n_way, dtype=torch.int32).repeat_interleave(k_shot)
    query_y = torch.arange(n_way, dtype=torch.int32).repeat_interleave(n_query)
    return support, support_y, query, query_y


def episode_from_package(labels, n_way, k_shot, n_query, generator):
    """Correct too: mb.tasks.FewShotClassification on "images" that are their own indices."""
    indices = torch.arange(len(labels), dtype=torch.float64).view(-1, 1, 1)  # (D, 1, 1) images
    sampler = mb.tasks.FewShotClassification(indices, labels, n_way, k_shot, n_query)
    batch = sampler.sample(1, generator=generator)
    return (
        batch.support_x.flatten().long(),
        batch.support_y[0],
        batch.query_x.flatten().long(),
        batch.query_y[0],
    )


def relabel(labels, support, query, new_labels):
    """The task of ``support`` and ``query`` with labels ``new_labels(class ids)``."""
    return support, new_labels(labels[support]), query, new_labels(labels[query])


def episode_class_ids(labels, n_way, k_shot, n_query, generator):
    support, _, query, _ = episode_loop(labels, n_way, k_shot, n_query, generator)
    return relabel(labels, support, query, lambda ids: ids)


def episode_modulo(labels, n_way, k_shot, n_query, generator):
    support, _, query, _ = episode_loop(labels, n_way, k_shot, n_query, generator)
    return relabel(labels, support, query, lambda ids: ids % n_way)


def episode_sorted(labels, n_way, k_shot, n_query, generator):
    """The chosen classes sorted before they are labelled."""
    support, _, query, _ = episode_loop(labels, n_way, k_shot, n_query, generator)
    chosen = labels[support].unique()  # sorted
    return relabel(labels, support, query, lambda ids: torch.searchsorted(chosen, ids))


def episode_first_appearance(labels, n_way, k_shot, n_query, generator):
    """The chosen classes labelled in the order they first appear in the dataset."""
    support, _, query, _ = episode_loop(labels, n_way, k_shot, n_query, generator)
    chosen = labels[support].unique()
    first = torch.stack([(labels == c).nonzero()[0, 0] for c in chosen])
    order = chosen[first.argsort()]
    return relabel(labels, support, query, lambda ids: (ids[:, None] == order).int().argmax(1))


def episode_with_replacement(labels, n_way, k_shot, n_query, generator):
    """The examples of a class drawn with torch.randint."""
    classes = labels.unique()
    chosen = classes[torch.randperm(len(classes), generator=generator)[:n_way]]
    support, query = [], []
    for c in chosen:
        examples = (labels == c).nonzero().squeeze(1)
        drawn = examples[torch.randint(len(examples), (k_shot + n_query,), generator=generator)]
        support.append(drawn[:k_shot])
        query.append(drawn[k_shot:])
    y = torch.arange(n_way)
    return torch.cat(support), y.repeat_interleave(k_shot), torch.cat(query), y.repeat_interleave(n_query)


def episode_overlapping_sets(labels, n_way, k_shot, n_query, generator):
    """Support and query drawn apart from each other: an image can be in both."""
    classes = labels.unique()
    chosen = classes[torch.randperm(len(classes), generator=generator)[:n_way]]
    support, query = [], []
    for c in chosen:
        examples = (labels == c).nonzero().squeeze(1)
        support.append(examples[torch.randperm(len(examples), generator=generator)[:k_shot]])
        query.append(examples[torch.randperm(len(examples), generator=generator)[:n_query]])
    y = torch.arange(n_way)
    return torch.cat(support), y.repeat_interleave(k_shot), torch.cat(query), y.repeat_interleave(n_query)


def episode_classes_with_replacement(labels, n_way, k_shot, n_query, generator):
    classes = labels.unique()
    chosen = classes[torch.randint(len(classes), (n_way,), generator=generator)]
    support, query = [], []
    for c in chosen:
        examples = (labels == c).nonzero().squeeze(1)
        examples = examples[torch.randperm(len(examples), generator=generator)]
        support.append(examples[:k_shot])
        query.append(examples[k_shot : k_shot + n_query])
    y = torch.arange(n_way)
    return torch.cat(support), y.repeat_interleave(k_shot), torch.cat(query), y.repeat_interleave(n_query)


def episode_global_generator(labels, n_way, k_shot, n_query, generator):
    return episode_loop(labels, n_way, k_shot, n_query, None)  # torch.randperm(..., generator=None)


def episode_python_random(labels, n_way, k_shot, n_query, generator):
    classes = random.sample(labels.unique().tolist(), n_way)
    support, query = [], []
    for c in classes:
        examples = random.sample((labels == c).nonzero().squeeze(1).tolist(), k_shot + n_query)
        support += examples[:k_shot]
        query += examples[k_shot:]
    y = torch.arange(n_way)
    return (
        torch.tensor(support),
        y.repeat_interleave(k_shot),
        torch.tensor(query),
        y.repeat_interleave(n_query),
    )


def episode_own_generator(labels, n_way, k_shot, n_query, generator):
    return episode_loop(labels, n_way, k_shot, n_query, torch.Generator().manual_seed(0))


def episode_first_classes(labels, n_way, k_shot, n_query, generator):
    """Always the first N classes, in a random label order."""
    support, _, query, _ = episode_loop(
        labels[torch.isin(labels, labels.unique()[:n_way])], n_way, 1, 1, generator
    )
    classes = labels.unique()[:n_way][torch.randperm(n_way, generator=generator)]
    support, query = [], []
    for c in classes:
        examples = (labels == c).nonzero().squeeze(1)
        examples = examples[torch.randperm(len(examples), generator=generator)]
        support.append(examples[:k_shot])
        query.append(examples[k_shot : k_shot + n_query])
    y = torch.arange(n_way)
    return torch.cat(support), y.repeat_interleave(k_shot), torch.cat(query), y.repeat_interleave(n_query)


def episode_first_examples(labels, n_way, k_shot, n_query, generator):
    """The first k + q images of each class in the dataset's order, not a random draw."""
    classes = labels.unique()
    chosen = classes[torch.randperm(len(classes), generator=generator)[:n_way]]
    support, query = [], []
    for c in chosen:
        examples = (labels == c).nonzero().squeeze(1)
        support.append(examples[:k_shot])
        query.append(examples[k_shot : k_shot + n_query])
    y = torch.arange(n_way)
    return torch.cat(support), y.repeat_interleave(k_shot), torch.cat(query), y.repeat_interleave(n_query)


def episode_sorts_labels_in_place(labels, n_way, k_shot, n_query, generator):
    labels.copy_(labels.sort().values)
    return episode_loop(labels, n_way, k_shot, n_query, generator)


def episode_mixed_query(labels, n_way, k_shot, n_query, generator):
    """The query labels shuffled apart from their images."""
    support, support_y, query, query_y = episode_loop(labels, n_way, k_shot, n_query, generator)
    return support, support_y, query, query_y[torch.randperm(len(query_y), generator=generator)]


def episode_float_indices(labels, n_way, k_shot, n_query, generator):
    support, support_y, query, query_y = episode_loop(labels, n_way, k_shot, n_query, generator)
    return support.float(), support_y, query.float(), query_y


def episode_wrong_order(labels, n_way, k_shot, n_query, generator):
    support, support_y, query, query_y = episode_loop(labels, n_way, k_shot, n_query, generator)
    return support, query, support_y, query_y


def episode_grouped(labels, n_way, k_shot, n_query, generator):
    """(N, K) support and (N, q) query tensors instead of flat ones."""
    support, support_y, query, query_y = episode_loop(labels, n_way, k_shot, n_query, generator)
    return (
        support.view(n_way, k_shot),
        support_y.view(n_way, k_shot),
        query.view(n_way, -1),
        query_y.view(n_way, -1),
    )


def episode_stub(labels, n_way, k_shot, n_query, generator):
    raise NotImplementedError()


@pytest.mark.parametrize("fn", [episode_loop, episode_shuffled_dataset, episode_from_package])
def test_check_sample_episode_accepts_a_correct_sampler(fn, checker_seed):
    verdict = check_sample_episode(fn, seed=checker_seed)
    assert verdict.passed, verdict.message


EPISODE_MISTAKES = [
    (episode_class_ids, "the original class ids"),
    (episode_modulo, "class ids modulo N"),
    (episode_sorted, "follow the order of the class ids"),
    (episode_first_appearance, "carries information about its class"),
    (episode_with_replacement, "without replacement (torch.randperm"),
    (episode_overlapping_sets, "appears twice in one task (in both sets)"),
    (episode_classes_with_replacement, "draw the N classes without replacement"),
    (episode_global_generator, "ignores generator"),
    (episode_python_random, "ignores generator"),
    (episode_own_generator, "every generator gives the same task"),
    (episode_first_classes, "draw the N classes at random"),
    (episode_first_examples, "the same support images in every task"),
    (episode_sorts_labels_in_place, "changed labels in place"),
    (episode_mixed_query, "come from several classes"),
    (episode_float_indices, "must hold integers"),
    (episode_wrong_order, "must have shape"),
    (episode_grouped, "must have shape"),
    (episode_stub, "raised NotImplementedError: write the function's body"),
    (lambda *args: None, "return four tensors"),
    (lambda labels, *args: [labels[:3].tolist()] * 4, "must be a tensor"),
    (lambda *args: 1 / 0, "raised ZeroDivisionError"),
]


@pytest.mark.parametrize(("fn", "keyword"), EPISODE_MISTAKES)
def test_check_sample_episode_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_sample_episode(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message


def test_check_sample_episode_leaves_the_global_generators_alone():
    torch.manual_seed(5)
    random.seed(5)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(5)
    random.seed(5)
    check_sample_episode(episode_global_generator)
    check_sample_episode(episode_python_random)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_check_sample_episode_rejects_bad_arguments():
    with pytest.raises(TypeError, match="fn must be a function sample_episode"):
        check_sample_episode("sample_episode")
    with pytest.raises(TypeError, match="seed"):
        check_sample_episode(episode_loop, seed=0.5)
    with pytest.raises(ValueError, match="seed"):
        check_sample_episode(episode_loop, seed=-1)


# Accuracy: accuracy(logits (T, M, N), labels (T, M)) -> (T,)


def accuracy_vectorised(logits, labels):
    return (logits.argmax(-1) == labels).float().mean(-1)


def accuracy_per_task(logits, labels):
    """Correct too: the package's accuracy of each task, stacked."""
    return torch.stack([mb.tasks.classification_accuracy(x, y) for x, y in zip(logits, labels, strict=True)])


def accuracy_true_division(logits, labels):
    """Correct too: int64 counts over the number of images, a float64 true division."""
    return (logits.argmax(2) == labels).sum(1) / labels.shape[1]


@pytest.mark.parametrize(
    "fn",
    [accuracy_vectorised, accuracy_per_task, accuracy_true_division, vmap(mb.tasks.classification_accuracy)],
)
def test_check_accuracy_accepts_a_correct_accuracy(fn, checker_seed):
    verdict = check_accuracy(fn, seed=checker_seed)
    assert verdict.passed, verdict.message


def accuracy_subtracts_the_max_in_place(logits, labels):
    logits.sub_(logits.max(-1, keepdim=True).values)  # the argmax is unchanged, the caller's logits not
    return accuracy_vectorised(logits, labels)


ACCURACY_MISTAKES = [
    (
        lambda logits, labels: (logits.argmax(1) == labels).float().mean(-1),
        "the argmax is over the query images",
    ),
    (lambda logits, labels: (logits.argmax(-1) == labels).sum(-1), "counts of correct predictions"),
    (lambda logits, labels: (logits.argmax(-1) == labels).float().sum(-1), "counts of correct predictions"),
    (lambda logits, labels: 100 * accuracy_vectorised(logits, labels), "percentages"),
    (lambda logits, labels: 1 - accuracy_vectorised(logits, labels), "error rates"),
    (lambda logits, labels: (logits.argmin(-1) == labels).float().mean(-1), "the smallest logit"),
    (
        lambda logits, labels: logits.softmax(-1).gather(-1, labels[..., None]).mean((1, 2)),
        "probability of the true class",
    ),
    (lambda logits, labels: logits.softmax(-1).max(-1).values.mean(-1), "the largest softmax probability"),
    (lambda logits, labels: (logits.max(-1).values == labels).float().mean(-1), "no prediction is counted"),
    (lambda logits, labels: (logits.argmax(-1) == labels).float().mean(), "the tasks are pooled"),
    (
        lambda logits, labels: (logits.argmax(-1) == labels).float().mean().expand(len(labels)),
        "the accuracy of all tasks pooled",
    ),
    (lambda logits, labels: (logits.argmax(-1) == labels).float(), "one value per query image:"),
    (lambda logits, labels: (logits.argmax(-1) == labels).float().mean(0), "averaged over the tasks"),
    (lambda logits, labels: (logits.argmax(-1) == labels).sum(-1) // labels.shape[1], "integer division"),
    (lambda logits, labels: (logits.argmax(-1) == labels).all(-1), "floating-point numbers, got torch.bool"),
    (lambda logits, labels: accuracy_vectorised(logits, labels).tolist(), "not a list"),
    (lambda logits, labels: None, "got None"),
    (accuracy_subtracts_the_max_in_place, "changed logits or labels in place"),
    (lambda logits, labels: logits.argmax(-1).eq(labels).mean(-1), "raised RuntimeError"),
]


@pytest.mark.parametrize(("fn", "keyword"), ACCURACY_MISTAKES)
def test_check_accuracy_names_the_mistake(fn, keyword, checker_seed):
    verdict = check_accuracy(fn, seed=checker_seed)
    assert not verdict.passed
    assert keyword in verdict.message, verdict.message


def test_check_accuracy_rejects_bad_arguments():
    with pytest.raises(TypeError, match="fn must be a function accuracy"):
        check_accuracy(None)
    with pytest.raises(TypeError, match="seed"):
        check_accuracy(accuracy_vectorised, seed="0")
    with pytest.raises(ValueError, match="seed"):
        check_accuracy(accuracy_vectorised, seed=2**63)
