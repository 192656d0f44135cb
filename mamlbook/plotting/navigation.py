"""Figures of MAML on 2-D navigation (chapter 8): training curves, returns by step, paths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ..evaluation import EvaluationResult
from ._style import curve_style, legend_outside

if TYPE_CHECKING:  # mamlbook.rl imports Gymnasium, which the other chapters' figures do not need
    from ..rl.sampling import Trajectories


def plot_navigation_training(curves: Mapping[str, torch.Tensor], window: int = 10) -> Figure:
    """Average return per meta-iteration of each named curve, over a moving window.

    Args:
        curves: ``{label: (iterations,) returns}``, e.g. a ``NavigationHistory``'s
            ``pre_update_returns`` and ``post_update_returns``.
        window: the moving average's width, >= 1 (shortened to the shortest curve).
    """
    if not curves:
        raise ValueError("curves is empty: pass {label: returns per meta-iteration}")
    figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for index, (label, returns) in enumerate(curves.items()):
        width = max(1, min(window, len(returns)))
        smoothed = returns.detach().cpu().unfold(0, width, 1).mean(dim=1)
        iterations = torch.arange(width, len(returns) + 1)
        axes.plot(iterations, smoothed, label=label, **curve_style(index, len(smoothed)))
    axes.set(xlabel="meta-iteration", ylabel="average return of the batch's episodes")
    legend_outside(axes)
    return figure


def plot_returns_by_step(
    results: Mapping[str, EvaluationResult],
    paper: Mapping[str, Sequence[float]] | None = None,
    oracle: float | None = None,
) -> Figure:
    """Average return after 0, 1, ... policy-gradient steps, with 95 % intervals.

    Args:
        results: ``{method: EvaluationResult}`` of returns per goal and step.
        paper: ``{method: values}``, the paper's values per step, drawn dotted in the
            method's colour; methods it does not name are skipped.
        oracle: a return drawn as a dashed horizontal line.
    """
    if not results:
        raise ValueError("results is empty: pass {method: EvaluationResult}")
    figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for index, (name, result) in enumerate(results.items()):
        steps = range(len(result.mean))
        line = axes.errorbar(
            steps, result.mean, yerr=result.ci95, capsize=3, label=name, **curve_style(index, len(steps))
        )
        if paper is not None and name in paper:
            color = line.lines[0].get_color()
            axes.plot(
                range(len(paper[name])),
                paper[name],
                color=color,
                linestyle=":",
                marker="x",
                label=f"{name}, the paper",
            )
    if oracle is not None:
        axes.axhline(oracle, color="black", linewidth=1, linestyle="--", label="oracle")
    axes.set_xticks(range(max(len(result.mean) for result in results.values())))
    axes.set(xlabel="policy-gradient steps on the new goal", ylabel="average return")
    legend_outside(axes)
    return figure


def plot_navigation_paths(before: Trajectories, after: Trajectories, episodes: int = 3) -> Figure:
    """The paths of a few episodes per goal, before and after adaptation, one panel per goal.

    Each path is drawn through the states the episode visited, from (0, 0); the star
    marks the goal.

    Args:
        before: the episodes of the policy before the step, ``(G, N, H, ...)``.
        after: the episodes after it, of the same goals.
        episodes: the episodes drawn per goal and policy, at most N.
    """
    if not torch.equal(before.goals, after.goals):
        raise ValueError("before and after must be episodes of the same goals")
    count = min(episodes, before.states.shape[1], after.states.shape[1])
    if count < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    num_goals = before.goals.shape[0]
    figure, panels = plt.subplots(
        1, num_goals, figsize=(3 * num_goals + 1.5, 3.2), layout="constrained", sharex=True, sharey=True
    )
    panels = [panels] if num_goals == 1 else list(panels)
    for goal, panel in enumerate(panels):
        for index, (label, trajectories) in enumerate(
            (("before the step", before), ("after the step", after))
        ):
            style = {**curve_style(index, 1), "marker": None}
            color = None
            for episode in range(count):
                taken = trajectories.mask[goal, episode].bool()
                path = trajectories.states[goal, episode][taken].detach().cpu()  # (steps taken, 2)
                (line,) = panel.plot(
                    *path.T, linewidth=1, color=color, label=label if episode == 0 else None, **style
                )
                color = line.get_color()
        panel.plot(
            *before.goals[goal].cpu(),
            marker="*",
            markersize=14,
            color="black",
            linestyle="none",
            label="goal",
        )
        panel.set(title=f"goal {goal + 1}", aspect="equal")
    limit = max(0.6, before.goals.abs().max().item() + 0.1)  # goals lie in [-0.5, 0.5]^2
    panels[0].set(xlim=(-limit, limit), ylim=(-limit, limit))
    legend_outside(panels[-1])
    return figure
