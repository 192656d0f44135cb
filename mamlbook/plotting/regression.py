"""Figures of fitting one function and of learning curves (chapters 2 and 3)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from .._checks import check_bool
from ._style import curve_style, legend_outside


def _flat(values: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Values as a 1-D CPU tensor, for matplotlib."""
    return torch.as_tensor(values).detach().cpu().reshape(-1)


def plot_fit(
    grid: torch.Tensor,
    curves: dict[str, torch.Tensor],
    *,
    truth: torch.Tensor | None = None,
    points: tuple[torch.Tensor, torch.Tensor] | None = None,
    title: str | None = None,
) -> Figure:
    """Functions of one variable on a grid: the true one, fitted ones and the data points.

    Args:
        grid: ``(N,)`` or ``(N, 1)`` inputs, in increasing order.
        curves: label -> ``(N,)`` or ``(N, 1)`` values on ``grid``, each in its own line
            style and marker.
        truth: the true function on ``grid``, drawn in black; None to leave it out.
        points: ``(x, y)`` of the data, ``(K,)`` or ``(K, 1)`` each, drawn in red.
        title: the panel's title.
    """
    figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
    x = _flat(grid)
    if truth is not None:
        axes.plot(x, _flat(truth), color="black", label="true function")
    for index, (label, values) in enumerate(curves.items()):
        axes.plot(x, _flat(values), label=label, **curve_style(index + 1, len(x)))  # "-" is the truth's
    if points is not None:
        axes.scatter(_flat(points[0]), _flat(points[1]), color="red", zorder=3, label="data points")
    axes.set(xlabel="x", ylabel="y", title=title)
    legend_outside(axes)
    return figure


def plot_versus(
    x: torch.Tensor | Sequence[float],
    curves: dict[str, torch.Tensor | Sequence[float]],
    *,
    xlabel: str,
    ylabel: str = "MSE",
    logx: bool = False,
    logy: bool = True,
) -> Figure:
    """Curves against one shared x axis, such as errors against the number of data points.

    Args:
        x: ``(S,)`` positions on the x axis (> 0 with ``logx``); up to 30 of them get a
            tick each.
        curves: label -> ``(S,)`` values, one line each in its own line style and marker.
        xlabel, ylabel: the axis labels.
        logx, logy: logarithmic axes.
    """
    logx, logy = check_bool("logx", logx), check_bool("logy", logy)
    positions = _flat(x)
    figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for index, (label, values) in enumerate(curves.items()):
        axes.plot(positions, _flat(values), label=label, **curve_style(index, len(positions)))
    axes.set(
        xlabel=xlabel, ylabel=ylabel, xscale="log" if logx else "linear", yscale="log" if logy else "linear"
    )
    if len(positions) <= 30:  # a tick at each position, labelled with its value
        axes.set_xticks(positions.tolist(), [f"{value:g}" for value in positions.tolist()])
        axes.xaxis.set_minor_locator(plt.NullLocator())
    legend_outside(axes)
    return figure
