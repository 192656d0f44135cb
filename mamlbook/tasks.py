"""Task distributions: where the tasks of a meta-learning problem come from (chapter 3).

A task distribution has ``sample(num_tasks, ..., *, generator=None) -> TaskBatch``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._checks import check_int, check_range
from .types import TaskBatch


class SineWaves(NamedTuple):
    """The hidden parameters of T sinusoid tasks: y = amplitude * sin(x + phase).

    ``amplitude`` and ``phase`` are ``(T,)`` tensors.
    """

    amplitude: torch.Tensor
    phase: torch.Tensor

    def curve(self, x: torch.Tensor) -> torch.Tensor:
        """Each task's true function at ``x``.

        Args:
            x: ``(N,)`` or ``(N, 1)`` points shared by all tasks, or ``(T, N, 1)``
                points per task.

        Returns:
            ``(T, N, 1)`` values amplitude_t * sin(x + phase_t).
        """
        if x.dim() < 3:
            x = x.reshape(1, -1, 1)  # (1, N, 1), broadcast over tasks
        return self.amplitude[:, None, None] * torch.sin(x + self.phase[:, None, None])


class Sinusoid:
    """The sinusoid regression family of the MAML paper (section 5.1).

    Each task is y = A sin(x + phase) with A ~ U(amplitude), phase ~ U(phase) and
    inputs x ~ U(x_range); the defaults are the paper's.

    Args:
        amplitude: ``(low, high)`` range of A.
        phase: ``(low, high)`` range of the phase, in radians.
        x_range: ``(low, high)`` range of the inputs.
    """

    def __init__(
        self,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.amplitude = check_range("amplitude", amplitude)
        self.phase = check_range("phase", phase)
        self.x_range = check_range("x_range", x_range)

    def __repr__(self) -> str:
        return f"Sinusoid(amplitude={self.amplitude}, phase={self.phase}, x_range={self.x_range})"

    def sample_waves(self, num_tasks: int, *, generator: torch.Generator | None = None) -> SineWaves:
        """Draw the amplitude and phase of ``num_tasks`` tasks."""
        num_tasks = check_int("num_tasks", num_tasks, minimum=1)
        amplitude = _uniform((num_tasks,), self.amplitude, generator)
        phase = _uniform((num_tasks,), self.phase, generator)
        return SineWaves(amplitude, phase)

    def make_batch(
        self,
        waves: SineWaves,
        k_shot: int = 10,
        n_query: int = 10,
        *,
        generator: torch.Generator | None = None,
    ) -> TaskBatch:
        """Draw support and query points for the given tasks.

        Returns:
            A TaskBatch with ``support_x``, ``support_y`` of shape ``(T, k_shot, 1)``
            and ``query_x``, ``query_y`` of shape ``(T, n_query, 1)``.
        """
        k_shot = check_int("k_shot", k_shot, minimum=1)
        n_query = check_int("n_query", n_query, minimum=1)
        num_tasks = waves.amplitude.shape[0]
        x = _uniform((num_tasks, k_shot + n_query, 1), self.x_range, generator)
        y = waves.curve(x)
        return TaskBatch(x[:, :k_shot], y[:, :k_shot], x[:, k_shot:], y[:, k_shot:])

    def sample(
        self,
        num_tasks: int,
        k_shot: int = 10,
        n_query: int = 10,
        *,
        generator: torch.Generator | None = None,
    ) -> TaskBatch:
        """Draw ``num_tasks`` new tasks with their support and query sets.

        Use ``sample_waves`` and ``make_batch`` instead to keep each task's true curve
        (for plots).

        Args:
            num_tasks: T >= 1.
            k_shot: K >= 1 support points per task.
            n_query: query points per task, >= 1.
            generator: the source of randomness; the global one when None.

        Returns:
            A TaskBatch, support ``(T, K, 1)`` and query ``(T, n_query, 1)``, float32.
        """
        waves = self.sample_waves(num_tasks, generator=generator)
        return self.make_batch(waves, k_shot, n_query, generator=generator)


def _uniform(
    shape: tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator | None
) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)


class FewShotClassification:
    """N-way K-shot classification tasks drawn from a labelled image collection.

    Each task picks ``n_way`` distinct classes uniformly and, from each, ``k_shot`` +
    ``n_query`` distinct examples: the first ``k_shot`` form the support set, the rest the
    query set. The i-th class drawn gets label i, so the class-to-label map changes from
    task to task and only the support set says which class is which.

    The images are kept as given (``uint8`` stays ``uint8``, on the CPU) and converted to
    float32 only when a batch is sampled; a ``(num_classes, max_count)`` table lists the
    examples of each class.

    Args:
        images: ``(N, H, W)`` or ``(N, C, H, W)`` images, ``uint8`` in 0..255 (scaled to
            [0, 1] when sampled) or floating point (used as they are).
        labels: ``(N,)`` integer class ids, any integers, not necessarily contiguous.
        n_way: classes per task, >= 1 and at most the number of classes.
        k_shot: support examples per class, >= 1.
        n_query: query examples per class, >= 1; every class needs at least
            ``k_shot + n_query`` examples.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, n_way: int, k_shot: int, n_query: int
    ) -> None:
        self.n_way = check_int("n_way", n_way, minimum=1)
        self.k_shot = check_int("k_shot", k_shot, minimum=1)
        self.n_query = check_int("n_query", n_query, minimum=1)
        images, labels = _check_images_and_labels(images, labels)
        self.images = images if images.dim() == 4 else images[:, None]  # (N, C, H, W), a view
        self.classes, class_of_example, self._counts = torch.unique(
            labels, return_inverse=True, return_counts=True
        )  # (num_classes,), (N,), (num_classes,)
        if self.n_way > self.num_classes:
            raise ValueError(f"n_way must be at most the number of classes, {self.num_classes}, got {n_way}")
        needed = self.k_shot + self.n_query
        smallest = int(self._counts.argmin())
        if int(self._counts[smallest]) < needed:
            raise ValueError(
                f"k_shot + n_query = {needed} examples per class are needed, but class "
                f"{int(self.classes[smallest])} has only {int(self._counts[smallest])}"
            )
        # Row c of the table lists the examples of class c, padded with -1.
        order = torch.argsort(class_of_example, stable=True)  # examples grouped by class
        first = torch.cumsum(self._counts, 0) - self._counts  # (num_classes,) start of each group
        position = torch.arange(len(labels)) - first[class_of_example[order]]
        self._index = torch.full((self.num_classes, int(self._counts.max())), -1, dtype=torch.long)
        self._index[class_of_example[order], position] = order

    @property
    def num_classes(self) -> int:
        """The number of distinct classes in ``labels``."""
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"FewShotClassification({len(self.images)} images of shape {tuple(self.images.shape[1:])}, "
            f"{self.num_classes} classes, n_way={self.n_way}, k_shot={self.k_shot}, n_query={self.n_query})"
        )

    def sample(self, num_tasks: int, *, generator: torch.Generator | None = None) -> TaskBatch:
        """Draw ``num_tasks`` tasks, all at once (no Python loop over tasks or classes).

        Args:
            num_tasks: T >= 1.
            generator: the source of randomness (a CPU generator); the global one when None.

        Returns:
            A TaskBatch on the CPU, with ``support_x`` ``(T, n_way * k_shot, C, H, W)`` float32,
            ``support_y`` ``(T, n_way * k_shot)`` int64 labels in 0..n_way-1, and
            ``query_x``, ``query_y`` likewise with ``n_way * n_query`` examples, grouped by
            label (label 0's examples first).
        """
        num_tasks = check_int("num_tasks", num_tasks, minimum=1)
        per_class = self.k_shot + self.n_query
        # The n_way classes, and then k + q examples of each, with the largest of random
        # scores: a uniform draw without replacement, in random order.
        scores = torch.rand(num_tasks, self.num_classes, generator=generator)
        classes = scores.topk(self.n_way, dim=1).indices  # (T, n_way)
        scores = torch.rand(num_tasks, self.n_way, self._index.shape[1], generator=generator)
        padding = torch.arange(self._index.shape[1]) >= self._counts[classes][..., None]  # beyond the count
        positions = scores.masked_fill(padding, -1.0).topk(per_class, dim=-1).indices  # (T, n_way, k + q)
        examples = self._index[classes[..., None], positions]  # (T, n_way, k + q)
        x = self.images[examples]  # (T, n_way, k + q, C, H, W)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        y = torch.arange(self.n_way)[:, None].expand(num_tasks, self.n_way, per_class)  # (T, n_way, k + q)
        support_x, query_x = x[:, :, : self.k_shot], x[:, :, self.k_shot :]
        support_y, query_y = y[:, :, : self.k_shot], y[:, :, self.k_shot :]
        return TaskBatch(
            support_x.flatten(1, 2),  # (T, n_way * k_shot, C, H, W)
            support_y.flatten(1, 2),
            query_x.flatten(1, 2),  # (T, n_way * n_query, C, H, W)
            query_y.flatten(1, 2),
        )


def classification_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The fraction of examples whose largest logit is at their label.

    A metric in the form of a loss function, ``metric(prediction, target)``.

    Args:
        logits: ``(K, N)`` scores of K examples for N classes (any leading shape).
        labels: ``(K,)`` integer labels in 0..N-1 (the leading shape of ``logits``).

    Returns:
        A scalar tensor in [0, 1], of the dtype of ``logits``.
    """
    for name, tensor in (("logits", logits), ("labels", labels)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not logits.is_floating_point() or logits.dim() == 0:
        raise ValueError(
            f"logits must be floating point of shape (K, N), "
            f"got {logits.dtype} of shape {tuple(logits.shape)}"
        )
    if not _holds_integers(labels):
        raise TypeError(f"labels must hold integers, got {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:-1])} to match logits {tuple(logits.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    return (logits.argmax(-1) == labels).to(logits.dtype).mean()


def _check_images_and_labels(images: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` and ``labels`` as CPU tensors, once their types and shapes are right."""
    for name, tensor in (("images", images), ("labels", labels)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if images.dim() not in (3, 4):
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    if not _holds_integers(labels):
        raise TypeError(f"labels must hold integer class ids, got {labels.dtype}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(
            f"labels must have shape (N,) with N = {len(images)} as for images, got {tuple(labels.shape)}"
        )
    return images.cpu(), labels.cpu().long()


def _holds_integers(tensor: torch.Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)
