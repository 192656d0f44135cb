"""The figures' legends sit outside the axes, their curves differ in style, and the cost
figure draws the medians that chapter 5's table prints."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import mamlbook as mb
from mamlbook.plotting._style import LINESTYLES, MARKERS, curve_style

EQUAL = [1.0, 0.5, 0.25, 0.125]  # one curve given under several labels, as equal results are


def _evaluation(mean: list[float]) -> mb.evaluation.EvaluationResult:
    values = torch.tensor([mean, mean])
    return mb.evaluation.EvaluationResult(values, values.mean(dim=0), torch.full((len(mean),), 0.01))


def _cost(algorithm: str, steps: int, median: float, saved_bytes: int) -> mb.profiling.Cost:
    timing = mb.profiling.Timing(median=median, min=median / 2, max=median * 2)
    return mb.profiling.Cost(algorithm, steps, timing, saved_bytes, None)


NAMES = [
    "plot_fit",
    "plot_versus",
    "plot_loss_curves",
    "plot_evaluation",
    "plot_meta_loss",
    "plot_sine_tasks",
    "plot_costs",
    "plot_path_on_contours",
    "plot_points_and_lines",
]


def _figures() -> dict[str, Figure]:
    """One figure of each helper that draws several labelled curves, with several each."""
    grid = torch.linspace(-1.0, 1.0, 50)
    surface = mb.plotting.linear_regression_surface(np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    path = np.array([[0.0, 0.0], [0.5, 0.5], [0.8, 0.9]])
    waves = mb.tasks.SineWaves(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, 2.0]))
    support = torch.linspace(-3.0, 3.0, 5).expand(3, 5)[..., None]
    batch = mb.types.TaskBatch(support, waves.curve(support), support, waves.curve(support))
    history = mb.training.TrainingHistory(torch.linspace(1.0, 0.1, 200), 1.0, "cpu", 0.01, None)
    costs = [
        _cost(name, steps, 0.01 * steps, 1000 * steps) for name in ("MAML", "FOMAML") for steps in (1, 2)
    ]
    return {
        "plot_fit": mb.plotting.plot_fit(
            grid, {"a": grid, "b": grid}, truth=grid, points=(grid[:3], grid[:3])
        ),
        "plot_versus": mb.plotting.plot_versus([1, 2, 4, 8], {name: EQUAL for name in "abc"}, xlabel="K"),
        "plot_loss_curves": mb.plotting.plot_loss_curves({name: np.array(EQUAL) for name in "abc"}),
        "plot_evaluation": mb.plotting.plot_evaluation({name: _evaluation(EQUAL) for name in "abc"}),
        "plot_meta_loss": mb.plotting.plot_meta_loss(history, smooth=10),
        "plot_sine_tasks": mb.plotting.plot_sine_tasks(waves, batch),
        "plot_costs": mb.plotting.plot_costs(costs),
        "plot_path_on_contours": mb.plotting.plot_path_on_contours(
            surface, {name: path for name in "abc"}, bounds=((-1, 2), (-1, 2))
        ),
        "plot_points_and_lines": mb.plotting.plot_points_and_lines(
            {"p": (np.zeros(3), np.ones(3)), "q": (np.ones(3), np.zeros(3))},
            {"p": (1.0, 0.0), "r": (1.0, 0.0), "s": (1.0, 0.0)},
        ),
    }


@pytest.fixture(scope="module")
def figures():
    drawn = _figures()
    for figure in drawn.values():
        figure.canvas.draw()  # lays the figure out, placing the legends
    yield drawn
    for figure in drawn.values():
        plt.close(figure)


def _legend(figure: Figure):
    legends = [axes.get_legend() for axes in figure.axes if axes.get_legend()] + list(figure.legends)
    assert len(legends) == 1, f"expected one legend, found {len(legends)}"
    return legends[0]


@pytest.mark.parametrize("name", NAMES)
def test_legend_covers_no_axes(figures, name):
    figure = figures[name]
    renderer = figure.canvas.get_renderer()
    legend_box = _legend(figure).get_window_extent(renderer)
    for axes in figure.axes:
        assert not legend_box.overlaps(axes.get_window_extent(renderer)), f"{name}: the legend covers an axes"
    inside = figure.bbox.x0 <= legend_box.x0 and legend_box.x1 <= figure.bbox.x1 + 1
    assert inside and figure.bbox.y0 <= legend_box.y0 and legend_box.y1 <= figure.bbox.y1 + 1, (
        f"{name}: the legend runs off the figure"
    )


def _style(handle) -> tuple[str, str]:
    """(line style, marker) of a legend entry's line; an error bar's is its data line's."""
    line = handle.lines[0] if isinstance(handle, matplotlib.container.ErrorbarContainer) else handle
    return line.get_linestyle(), line.get_marker()


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"plot_sine_tasks"}))
def test_labelled_lines_differ_in_style(figures, name):
    handles = [
        handle
        for handle in figures[name].axes[0].get_legend_handles_labels()[0]
        if not isinstance(handle, matplotlib.collections.Collection)  # scatter points: not a curve
    ]
    styles = [_style(handle) for handle in handles]
    assert len(styles) >= 2, f"{name}: expected several lines"
    assert len(set(styles)) == len(styles), f"{name}: two lines share a style: {styles}"


def test_sine_tasks_differ_in_line_style_and_marker(figures):
    axes = figures["plot_sine_tasks"].axes[0]
    line_styles = [line.get_linestyle() for line in axes.get_lines()]
    markers = [collection.get_paths()[0] for collection in axes.collections]
    assert len(set(line_styles)) == 3
    assert len({tuple(map(tuple, path.vertices.round(6))) for path in markers}) == 3
    assert len(_legend(figures["plot_sine_tasks"]).get_texts()) == 3


def test_curve_styles_all_differ_over_twenty_curves():
    pairs = {(style["linestyle"], style["marker"]) for style in map(curve_style, range(20), [5] * 20)}
    assert len(pairs) == len(LINESTYLES) * len(MARKERS) == 20


def test_plot_costs_draws_the_median_time(figures):
    time_axes, memory_axes = figures["plot_costs"].axes
    for line in time_axes.get_lines():
        steps = line.get_xdata()
        assert np.allclose(line.get_ydata(), [1e3 * 0.01 * step for step in steps])  # median, in ms
    assert "median" in time_axes.get_ylabel()
    assert [line.get_label() for line in memory_axes.get_lines()] == ["MAML", "FOMAML"]
