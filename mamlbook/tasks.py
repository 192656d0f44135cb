"""Task distributions: where the tasks of a meta-learning problem come from (chapter 3).

A task distribution has ``sample(num_tasks, ..., *, generator=None) -> TaskBatch``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .types import TaskBatch
from .validation import check_int, check_range


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
        num_support: int = 10,
        num_query: int = 10,
        *,
        generator: torch.Generator | None = None,
    ) -> TaskBatch:
        """Draw support and query points for the given tasks.

        Returns:
            A TaskBatch with ``support_x``, ``support_y`` of shape ``(T, num_support, 1)``
            and ``query_x``, ``query_y`` of shape ``(T, num_query, 1)``.
        """
        num_support = check_int("num_support", num_support, minimum=1)
        num_query = check_int("num_query", num_query, minimum=1)
        num_tasks = waves.amplitude.shape[0]
        x = _uniform((num_tasks, num_support + num_query, 1), self.x_range, generator)
        y = waves.curve(x)
        return TaskBatch(x[:, :num_support], y[:, :num_support], x[:, num_support:], y[:, num_support:])

    def sample(
        self,
        num_tasks: int,
        num_support: int = 10,
        num_query: int = 10,
        *,
        generator: torch.Generator | None = None,
    ) -> TaskBatch:
        """Draw ``num_tasks`` new tasks with their support and query sets.

        Use ``sample_waves`` and ``make_batch`` instead to keep each task's true curve
        (for plots).

        Args:
            num_tasks: T >= 1.
            num_support: K >= 1 support points per task.
            num_query: query points per task, >= 1.
            generator: the source of randomness; the global one when None.

        Returns:
            A TaskBatch, support ``(T, K, 1)`` and query ``(T, num_query, 1)``, float32.
        """
        waves = self.sample_waves(num_tasks, generator=generator)
        return self.make_batch(waves, num_support, num_query, generator=generator)


def _uniform(
    shape: tuple[int, ...], bounds: tuple[float, float], generator: torch.Generator | None
) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=generator)
