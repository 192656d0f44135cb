"""Loss curves and loss surfaces with gradient-descent paths drawn on them (chapters 0 and 1).

Everything here takes NumPy arrays (or anything ``numpy.asarray`` accepts). A loss
surface is a function ``surface(w, b) -> loss`` of two parameters that works
elementwise on arrays of the same shape, as ``numpy`` expressions do; paths are the
iterates of gradient descent, one row per step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._checks import check_bool
from ._style import MARKERS, curve_style, legend_outside, line_and_marker

Surface = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``surface(w, b) -> loss``, elementwise over arrays ``w`` and ``b`` of one shape."""

Bounds = tuple[tuple[float, float], tuple[float, float]]
"""``((w_low, w_high), (b_low, b_high))``, the rectangle drawn."""

_GRID_POINTS = 200


def linear_regression_surface(x: np.ndarray, y: np.ndarray) -> Surface:
    """The mean squared error of the line ``w * x + b`` on the points ``(x, y)``.

    Args:
        x: ``(K,)`` inputs.
        y: ``(K,)`` targets.

    Returns:
        ``surface(w, b)``: for arrays ``w`` and ``b`` of one shape ``S``, the ``S``-shaped
        array of losses ``mean_i (w x_i + b - y_i) ** 2``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"x and y must be (K,) arrays with K >= 1, got shapes {x.shape} and {y.shape}")

    def surface(w: np.ndarray, b: np.ndarray) -> np.ndarray:
        w, b = np.asarray(w, dtype=float), np.asarray(b, dtype=float)
        residuals = w[..., None] * x + b[..., None] - y  # (*S, K)
        return np.mean(residuals**2, axis=-1)

    return surface


def plot_points_and_lines(
    points: Mapping[str, tuple[np.ndarray, np.ndarray]],
    lines: Mapping[str, tuple[float, float]],
    *,
    x_range: tuple[float, float] | None = None,
) -> Figure:
    """Data sets of points ``(x, y)`` and straight lines ``y = w x + b`` in one panel.

    A line whose label is also a data set's label takes that data set's colour. Each
    data set has its own marker and each line its own line style.

    Args:
        points: label -> ``(x, y)``, two ``(K,)`` arrays.
        lines: label -> ``(w, b)``, the slope and intercept.
        x_range: ``(low, high)``, the interval the lines are drawn over; by default
            that of all the points.
    """
    arrays = {label: _points(label, x, y) for label, (x, y) in points.items()}
    if x_range is None:
        if not arrays:
            raise ValueError("x_range is needed when there are no points")
        every_x = np.concatenate([x for x, _ in arrays.values()])
        x_range = (float(every_x.min()), float(every_x.max()))
    grid = np.linspace(*x_range, 2)
    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    taken = {label: next(colors) for label in arrays}
    figure, axes = plt.subplots(figsize=(6.5, 3.5), layout="constrained")
    for index, (label, (x, y)) in enumerate(arrays.items()):
        marker = line_and_marker(index)["marker"]
        axes.scatter(x, y, s=14, color=taken[label], marker=marker, label=label)
    for index, (label, (w, b)) in enumerate(lines.items()):
        color = taken.get(label) or next(colors)
        linestyle = line_and_marker(index)["linestyle"]
        axes.plot(
            grid, w * grid + b, color=color, linestyle=linestyle, label=None if label in taken else label
        )
    axes.set(xlabel="x", ylabel="y")
    legend_outside(axes)
    return figure


def plot_loss_curves(
    curves: Mapping[str, np.ndarray], *, log_scale: bool = True, xlabel: str = "step", ylabel: str = "loss"
) -> Figure:
    """One line per entry: the loss at step 0, 1, ..., n.

    Args:
        curves: label -> ``(n + 1,)`` losses; the entries may have different lengths. Each
            has its own line style and marker.
        log_scale: a logarithmic loss axis, which shows both fast convergence and
            divergence on one plot.
        xlabel, ylabel: the axis labels.
    """
    check_bool("log_scale", log_scale)
    figure, axes = plt.subplots(figsize=(7, 3.5), layout="constrained")
    for index, (label, curve) in enumerate(curves.items()):
        curve = _array(f"curves[{label!r}]", curve, ndim=1)
        axes.plot(np.arange(len(curve)), curve, label=label, **curve_style(index, len(curve)))
    axes.set(xlabel=xlabel, ylabel=ylabel, yscale="log" if log_scale else "linear")
    legend_outside(axes)
    return figure


def plot_path_on_curve(
    loss_fn: Callable[[np.ndarray], np.ndarray],
    paths: Mapping[str, np.ndarray],
    *,
    bounds: tuple[float, float],
    xlabel: str = "w",
) -> Figure:
    """A loss of one parameter and the iterates of gradient descent drawn on it.

    Args:
        loss_fn: ``loss_fn(w) -> loss``, elementwise over an array ``w``.
        paths: label -> ``(n + 1,)`` iterates ``w_0, ..., w_n``; one panel per entry.
        bounds: ``(low, high)``, the interval of ``w`` drawn. Iterates outside it are
            off the picture (a diverging path leaves it).
        xlabel: the name of the parameter.
    """
    grid = np.linspace(*bounds, _GRID_POINTS)
    figure, panels = plt.subplots(
        1, len(paths), figsize=(3.2 * len(paths), 3.2), squeeze=False, sharey=True, layout="constrained"
    )
    for panel, (label, path) in zip(panels[0], paths.items(), strict=True):
        path = _array(f"paths[{label!r}]", path, ndim=1)
        panel.plot(grid, loss_fn(grid), color="black", linewidth=1)
        panel.plot(path, loss_fn(path), color="tab:red", marker="o", markersize=3, linewidth=0.8)
        panel.plot(path[:1], loss_fn(path[:1]), color="tab:red", marker="s", linestyle="none")
        panel.set(xlabel=xlabel, title=label, xlim=bounds, ylim=(None, 1.05 * loss_fn(grid).max()))
    panels[0, 0].set_ylabel("loss")
    return figure


def plot_path_on_contours(
    surface: Surface,
    paths: Mapping[str, np.ndarray],
    *,
    bounds: Bounds,
    optima: Mapping[str, np.ndarray] | None = None,
    levels: int = 8,
    axis_labels: tuple[str, str] = ("w", "b"),
) -> Figure:
    """Contour lines of a loss of two parameters, with gradient-descent paths on them.

    Args:
        surface: ``surface(w, b) -> loss`` (see ``linear_regression_surface``).
        paths: label -> ``(n + 1, 2)`` iterates, the start first; one colour, line style
            and marker each.
        bounds: ``((w_low, w_high), (b_low, b_high))``; iterates outside are off the picture.
        optima: label -> ``(2,)`` points to mark with a star, e.g. the minimum.
        levels: number of contour lines, spaced so that a quadratic bowl's are evenly spaced.
        axis_labels: the names of the two parameters.
    """
    figure, axes = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    _draw_contours(axes, surface, bounds, levels, color="0.6")
    for index, (label, path) in enumerate(paths.items()):
        path = _array(f"paths[{label!r}]", path, ndim=2, width=2)
        _draw_path(axes, path, label=label, **line_and_marker(index))
    _draw_optima(axes, optima or {}, color="black")
    axes.set(xlabel=axis_labels[0], ylabel=axis_labels[1], xlim=bounds[0], ylim=bounds[1])
    legend_outside(axes)
    return figure


def plot_task_family_landscape(
    surfaces: Mapping[str, Surface],
    paths: Mapping[str, Mapping[str, np.ndarray]],
    *,
    bounds: Bounds,
    optima: Mapping[str, np.ndarray] | None = None,
    new_tasks: Collection[str] = (),
    levels: int = 5,
    axis_labels: tuple[str, str] = ("w", "b"),
) -> Figure:
    """Several tasks' loss surfaces in one picture, and adaptation paths from several starts.

    One panel per start. Each panel draws every task's contour lines in the task's
    colour, marks each task's optimum, and draws the path of gradient descent on each
    task from that panel's start (a black square). The legend names the tasks, the
    start (theta) and the optima (theta*_t).

    Args:
        surfaces: task label -> ``surface(w, b) -> loss``.
        paths: start label -> {task label -> ``(n + 1, 2)`` iterates}; all paths of a
            panel begin at its start.
        bounds: ``((w_low, w_high), (b_low, b_high))``, the same in every panel.
        optima: task label -> ``(2,)`` optimum of that task, marked with a star in the
            task's colour and labelled ``<task label>*``.
        new_tasks: labels of tasks to set apart as new ones (not among those that
            shaped the starts): their contours and paths are dashed, and the legend
            says "(new)".
        levels: contour lines per task.
        axis_labels: the names of the two parameters.

    Raises:
        ValueError: a path, an optimum or a new task names a task that is not in
            ``surfaces``, or a path or an optimum has the wrong shape.
        TypeError: ``new_tasks`` is a string rather than a collection of labels.
    """
    if isinstance(new_tasks, str):
        raise TypeError(f"new_tasks must be a collection of task labels, got the string {new_tasks!r}")
    colors = dict(zip(surfaces, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    optima = {task: np.asarray(point, dtype=float) for task, point in (optima or {}).items()}
    for argument, tasks in (("optima", optima), ("new_tasks", new_tasks)):
        unknown = [task for task in tasks if task not in surfaces]
        if unknown:
            raise ValueError(f"{argument} names tasks {unknown}, which are not in surfaces")
    for task, point in optima.items():
        if point.shape != (2,):
            raise ValueError(
                f"optima[{task!r}] must be a point (w, b) of shape (2,), got shape {point.shape}"
            )
    markers = [marker for marker in MARKERS if marker != "s"]  # the square marks the start
    style = {  # a marker per task; new tasks dashed
        task: {"linestyle": "--" if task in new_tasks else "-", "marker": markers[index % len(markers)]}
        for index, task in enumerate(surfaces)
    }
    figure, panels = plt.subplots(
        1, len(paths), figsize=(3.6 * len(paths), 4.2), squeeze=False, sharey=True, layout="constrained"
    )
    for panel, (start, task_paths) in zip(panels[0], paths.items(), strict=True):
        for task, surface in surfaces.items():
            _draw_contours(
                panel,
                surface,
                bounds,
                levels,
                color=colors[task],
                alpha=0.45,
                linestyles=style[task]["linestyle"],
            )
        for task, path in task_paths.items():
            if task not in colors:
                raise ValueError(f"paths[{start!r}] names task {task!r}, which is not in surfaces")
            path = _array(f"paths[{start!r}][{task!r}]", path, ndim=2, width=2)
            _draw_path(panel, path, label=task, color=colors[task], **style[task])
        for task, point in optima.items():
            _draw_optima(panel, {f"{task}*": point}, color=colors[task])
        panel.set(title=start, xlabel=axis_labels[0], xlim=bounds[0], ylim=bounds[1])
    panels[0, 0].set_ylabel(axis_labels[1])
    handles = _landscape_legend(colors, style, new_tasks, with_optima=bool(optima))
    columns = min(len(handles), 3 * len(paths))  # about three entries fit under a panel
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize="small")
    return figure


def _landscape_legend(
    colors: Mapping[str, str],
    style: Mapping[str, Mapping[str, str]],
    new_tasks: Collection[str],
    *,
    with_optima: bool,
) -> list[Line2D]:
    """Legend entries: one per task (its path, as ``_draw_path`` draws it), then the start and,
    if drawn, the optima."""
    handles = [
        Line2D(
            [],
            [],
            markersize=3,
            linewidth=1.2,
            color=color,
            **style[task],
            label=f"{task} (new)" if task in new_tasks else task,
        )
        for task, color in colors.items()
    ]
    square = {"marker": "s", "markersize": 6, "color": "black", "linestyle": "none"}
    handles.append(Line2D([], [], **square, label=r"start $\theta$"))
    if with_optima:
        star = {"marker": "*", "markersize": 10, "color": "white", "markeredgecolor": "black"}
        handles.append(Line2D([], [], linestyle="none", **star, label=r"optimum $\theta^\star_t$"))
    return handles


def _array(name: str, values: object, *, ndim: int, width: int | None = None) -> np.ndarray:
    """``values`` as a float array with ``ndim`` dimensions (and ``width`` columns), or a ValueError."""
    array = np.asarray(values, dtype=float)
    if array.ndim != ndim or array.shape[0] == 0 or (width is not None and array.shape[-1] != width):
        expected = "(n,)" if ndim == 1 else f"(n, {width})"
        raise ValueError(f"{name} must be an array of shape {expected} with n >= 1, got shape {array.shape}")
    return array


def _points(label: str, x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as ``(K,)`` float arrays of one length, or a ValueError naming ``points[label]``."""
    x, y = _array(f"points[{label!r}] x", x, ndim=1), _array(f"points[{label!r}] y", y, ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"points[{label!r}] has {len(x)} inputs x but {len(y)} targets y")
    return x, y


def _draw_contours(axes: Axes, surface: Surface, bounds: Bounds, levels: int, **style) -> None:
    """Contour lines of ``surface`` over ``bounds``, at levels spaced as squares above its minimum."""
    w, b = np.meshgrid(np.linspace(*bounds[0], _GRID_POINTS), np.linspace(*bounds[1], _GRID_POINTS))
    values = surface(w, b)  # (200, 200)
    low, high = float(np.min(values)), float(np.max(values))
    heights = low + (high - low) * (np.arange(1, levels + 1) / (levels + 1)) ** 2
    axes.contour(w, b, values, levels=heights, colors=style.pop("color"), linewidths=0.8, **style)


def _draw_path(
    axes: Axes,
    path: np.ndarray,
    *,
    label: str,
    color: str | None = None,
    linestyle: str = "-",
    marker: str = "o",
) -> None:
    """The iterates joined by a line, a ``marker`` at each step and a black square at the start."""
    axes.plot(
        path[:, 0],
        path[:, 1],
        linestyle=linestyle,
        marker=marker,
        markersize=3,
        linewidth=1.2,
        label=label,
        color=color,
    )
    axes.plot(path[0, 0], path[0, 1], marker="s", markersize=6, color="black", linestyle="none")


def _draw_optima(axes: Axes, optima: Mapping[str, np.ndarray], *, color: str) -> None:
    """A star at each point of ``optima`` (label -> ``(2,)``), annotated with its label."""
    for label, point in optima.items():
        point = _array(f"optima[{label!r}]", point, ndim=1, width=2)
        axes.plot(point[0], point[1], marker="*", markersize=12, color=color, markeredgecolor="black")
        axes.annotate(label, point, textcoords="offset points", xytext=(6, 4), fontsize="small")
