"""plot_task_family_landscape (chapter 0): what its legend names, how it sets new tasks apart,
and the arguments it refuses."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.lines import Line2D

import mamlbook as mb


def two_tasks():
    """Two line tasks (T1 old, T2 new), one start, and a two-step path on each."""
    x = np.linspace(-1.0, 1.0, 5)
    surfaces = {
        "T1": mb.plotting.linear_regression_surface(x, 2 * x + 1),
        "T2": mb.plotting.linear_regression_surface(x, -x),
    }
    paths = {
        "start": {
            "T1": np.array([[0.0, 0.0], [1.0, 0.5], [1.5, 0.8]]),
            "T2": np.array([[0.0, 0.0], [-0.5, 0.0], [-0.8, 0.0]]),
        }
    }
    optima = {"T1": np.array([2.0, 1.0]), "T2": np.array([-1.0, 0.0])}
    return surfaces, paths, optima


def draw(**kwargs):
    surfaces, paths, optima = two_tasks()
    arguments = {"bounds": ((-2.0, 3.0), (-1.0, 2.0)), "optima": optima, "new_tasks": ["T2"]} | kwargs
    return mb.plotting.plot_task_family_landscape(surfaces, paths, **arguments)


def test_landscape_legend_names_the_tasks_the_start_and_the_optima():
    figure = draw()
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == ["T1", "T2 (new)", r"start $\theta$", r"optimum $\theta^\star_t$"]
    plt.close(figure)


def test_landscape_legend_leaves_out_the_optima_when_none_are_drawn():
    figure = draw(optima=None, new_tasks=())
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["T1", "T2", r"start $\theta$"]
    plt.close(figure)


def test_landscape_draws_the_given_paths_and_dashes_the_new_task():
    _, paths, _ = two_tasks()
    figure = draw()
    (panel,) = figure.axes
    path_lines = [line for line in panel.get_lines() if len(line.get_xdata()) == 3]
    assert len(path_lines) == 2
    for line, task in zip(path_lines, ("T1", "T2"), strict=True):
        np.testing.assert_allclose(np.column_stack(line.get_data()), paths["start"][task])
    assert [line.get_linestyle() for line in path_lines] == ["-", "--"]
    plt.close(figure)


def test_landscape_marks_the_start_and_each_optimum():
    figure = draw()
    (panel,) = figure.axes
    markers = [(line.get_marker(), tuple(np.ravel(line.get_data()))) for line in panel.get_lines()]
    assert ("s", (0.0, 0.0)) in markers
    assert ("*", (2.0, 1.0)) in markers and ("*", (-1.0, 0.0)) in markers
    assert sorted(text.get_text() for text in panel.texts) == ["T1*", "T2*"]
    plt.close(figure)


def test_landscape_tasks_differ_in_marker_and_legend_matches_the_paths():
    figure = draw()
    (panel,) = figure.axes
    drawn = [
        (line.get_linestyle(), line.get_marker())
        for line in panel.get_lines()
        if line.get_label() in ("T1", "T2")
    ]
    assert len(set(drawn)) == 2 and "s" not in {marker for _, marker in drawn}, "the square marks the start"
    handles = figure.legends[0].legend_handles
    assert all(isinstance(handle, Line2D) for handle in handles)
    assert [(handle.get_linestyle(), handle.get_marker()) for handle in handles[:2]] == drawn
    plt.close(figure)


def test_landscape_legend_sits_below_the_panels():
    figure = draw()
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend_box = figure.legends[0].get_window_extent(renderer)
    assert not any(legend_box.overlaps(axes.get_window_extent(renderer)) for axes in figure.axes)
    assert figure.bbox.y0 <= legend_box.y0 and legend_box.x1 <= figure.bbox.x1 + 1
    plt.close(figure)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optima": {"T9": np.zeros(2)}}, r"optima names tasks \['T9'\], which are not in surfaces"),
        ({"new_tasks": ["T9"]}, r"new_tasks names tasks \['T9'\], which are not in surfaces"),
        (
            {"optima": {"T1": np.zeros(3)}},
            r"optima\['T1'\] must be a point \(w, b\) of shape \(2,\), got shape \(3,\)",
        ),
    ],
)
def test_landscape_rejects_unknown_tasks_and_bad_optima(kwargs, message):
    with pytest.raises(ValueError, match=message):
        draw(**kwargs)
    plt.close("all")


def test_landscape_refuses_a_string_for_new_tasks():
    with pytest.raises(TypeError, match="new_tasks must be a collection of task labels"):
        draw(new_tasks="T2")
