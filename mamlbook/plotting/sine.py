"""Figures of sine-wave regression and of meta-training (quick start, chapters 3-5)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.func import functional_call

from .._checks import params_device
from ..evaluation import EvaluationResult
from ..meta import adapt
from ..tasks import SineWaves
from ..training import TrainingHistory
from ..types import LossFn, Params, TaskBatch
from ._style import curve_style, legend_outside, line_and_marker


def plot_meta_loss(history: TrainingHistory, *, smooth: int = 50) -> Figure:
    """The meta-loss per iteration and its moving average over ``smooth`` iterations."""
    losses = history.meta_losses
    figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
    axes.plot(losses, alpha=0.3, label="meta-loss", **curve_style(0, len(losses)))
    if len(losses) >= smooth > 1:
        moving = losses.unfold(0, smooth, 1).mean(dim=1)
        axes.plot(
            range(smooth - 1, len(losses)), moving, label=f"mean of {smooth}", **curve_style(1, len(moving))
        )
    axes.set(xlabel="meta-iteration", ylabel="query MSE after adaptation", yscale="log")
    legend_outside(axes)
    return figure


def plot_sine_tasks(
    waves: SineWaves, batch: TaskBatch, *, x_range: tuple[float, float] = (-5.0, 5.0)
) -> Figure:
    """A few sinusoid tasks in one panel: each task's true curve and its support points.

    Each task has its own colour, line style and marker of its support points.

    Args:
        waves: the true amplitude and phase of the tasks, ``(T,)`` each.
        batch: their support sets, ``(T, K, 1)`` (the query sets are not used).
        x_range: the interval drawn.
    """
    grid = torch.linspace(*x_range, 200)
    truth = waves.curve(grid)  # (T, 200, 1)
    figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
    handles = []
    for task in range(len(waves.amplitude)):
        style = line_and_marker(task)
        (line,) = axes.plot(grid, truth[task, :, 0], linestyle=style["linestyle"])
        support_x, support_y = batch.support_x[task, :, 0].cpu(), batch.support_y[task, :, 0].cpu()
        points = axes.scatter(support_x, support_y, color=line.get_color(), marker=style["marker"])
        handles.append((line, points))
    axes.set(xlabel="x", ylabel="y")
    legend_outside(axes, handles, [f"task {task}" for task in range(len(handles))])
    return figure


def plot_sine_adaptation(
    model: nn.Module,
    params: Params,
    waves: SineWaves,
    batch: TaskBatch,
    *,
    loss_fn: LossFn,
    inner_lr: float,
    steps: tuple[int, ...] = (0, 1, 10),
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> Figure:
    """One panel per task: the true sine, the support points and the fit after each of ``steps``.

    Args:
        model, params: the network and the starting point theta.
        waves: the true amplitude and phase of the tasks, ``(T,)`` each.
        batch: their support sets (the query sets are not used).
        loss_fn, inner_lr: the inner loop's loss and step size.
        steps: numbers of inner steps to draw.
        x_range: the interval drawn.
    """
    grid = torch.linspace(*x_range, 200)
    device = params_device(params)
    truth = waves.curve(grid)  # (T, 200, 1)
    num_tasks = len(waves.amplitude)
    figure, axes = plt.subplots(
        1, num_tasks, figsize=(3.2 * num_tasks, 3.4), squeeze=False, sharey=True, layout="constrained"
    )
    for task, panel in enumerate(axes[0]):
        panel.plot(grid, truth[task, :, 0], color="black", label="true function")
        support_x, support_y = batch.support_x[task].to(device), batch.support_y[task].to(device)
        for index, count in enumerate(steps):
            adapted = adapt(
                model, params, support_x, support_y, loss_fn=loss_fn, inner_lr=inner_lr, inner_steps=count
            )
            with torch.no_grad():
                fit = functional_call(model, adapted, (grid[:, None].to(device),)).cpu()
            style = curve_style(index + 1, len(grid))  # "-" is the truth's
            panel.plot(grid, fit[:, 0], label=f"after {count} step{'s' * (count != 1)}", **style)
        panel.scatter(
            support_x.cpu()[:, 0], support_y.cpu()[:, 0], color="red", zorder=3, label="support points"
        )
        panel.set(xlabel="x", title=f"task {task}")
    axes[0, 0].set_ylabel("y")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    return figure


def plot_evaluation(results: dict[str, EvaluationResult]) -> Figure:
    """Mean query loss against inner steps with 95 % intervals, one line per entry.

    Each entry has its own line style and marker, so that equal curves stay visible.
    """
    figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for index, (label, result) in enumerate(results.items()):
        steps = range(len(result.mean))
        axes.errorbar(
            steps, result.mean, yerr=result.ci95, capsize=3, label=label, **curve_style(index, len(steps))
        )
    axes.set(xlabel="inner steps on the support set", ylabel="query MSE")
    legend_outside(axes)
    return figure
