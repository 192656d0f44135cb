"""Figures of what meta-learning algorithms cost (chapter 5)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from ..profiling import Cost
from ._style import curve_style


def plot_costs(costs: Sequence[Cost]) -> Figure:
    """Time and saved-tensor memory of one meta-iteration against inner steps, per algorithm.

    The time drawn is the median of the timed repeats (``Cost.seconds.median``, the
    number chapter 5's table prints), the memory ``Cost.saved_bytes``. One legend, to
    the right of both panels, names the algorithms, each in its own line style and marker.

    Args:
        costs: as returned by ``mamlbook.profiling.measure_costs``.
    """
    if not costs:
        raise ValueError("costs is empty: pass the list returned by measure_costs")
    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
    for index, algorithm in enumerate(dict.fromkeys(cost.algorithm for cost in costs)):
        rows = sorted(
            (cost for cost in costs if cost.algorithm == algorithm), key=lambda cost: cost.inner_steps
        )
        steps = [cost.inner_steps for cost in rows]
        style = curve_style(index, len(steps))
        time_axes.plot(steps, [1e3 * cost.seconds.median for cost in rows], label=algorithm, **style)
        memory_axes.plot(steps, [cost.saved_bytes / 1e6 for cost in rows], label=algorithm, **style)
    time_axes.set(xlabel="inner steps", ylabel="median time per meta-iteration (ms)", ylim=(0, None))
    memory_axes.set(xlabel="inner steps", ylabel="tensors saved for backward (MB)", ylim=(0, None))
    figure.legend(*time_axes.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    return figure
