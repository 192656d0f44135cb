"""Figures of what meta-learning algorithms cost (chapter 5)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ..profiling import Cost


def plot_costs(costs: Sequence[Cost]) -> Figure:
    """Time and saved-tensor memory of one meta-iteration against inner steps, per algorithm.

    The time drawn is the fastest of the timed repeats (the least disturbed by other
    programs), the memory ``Cost.saved_bytes``.

    Args:
        costs: as returned by ``mamlbook.profiling.measure_costs``.
    """
    if not costs:
        raise ValueError("costs is empty: pass the list returned by measure_costs")
    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    for algorithm in dict.fromkeys(cost.algorithm for cost in costs):
        rows = sorted(
            (cost for cost in costs if cost.algorithm == algorithm), key=lambda cost: cost.inner_steps
        )
        steps = [cost.inner_steps for cost in rows]
        time_axes.plot(steps, [1e3 * cost.seconds.min for cost in rows], marker="o", label=algorithm)
        memory_axes.plot(steps, [cost.saved_bytes / 1e6 for cost in rows], marker="o", label=algorithm)
    time_axes.set(xlabel="inner steps", ylabel="time per meta-iteration (ms)", ylim=(0, None))
    memory_axes.set(xlabel="inner steps", ylabel="tensors saved for backward (MB)", ylim=(0, None))
    time_axes.legend()
    figure.tight_layout()
    return figure
