"""How the figures tell curves apart and where they put their legends.

Each curve of a panel gets its own pair of line style and hollow marker, so that two
curves with equal values stay visible one above the other, and the legend sits to the
right of the axes, where it covers no data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.artist import Artist
from matplotlib.axes import Axes

LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v")
_MARKERS_PER_CURVE = 12


def line_and_marker(index: int) -> dict[str, str]:
    """The ``linestyle`` and ``marker`` of the ``index``-th curve of a panel (see ``curve_style``)."""
    return {"linestyle": LINESTYLES[index % len(LINESTYLES)], "marker": MARKERS[index % len(MARKERS)]}


def curve_style(index: int, points: int) -> dict[str, object]:
    """Keyword arguments of ``Axes.plot`` for the ``index``-th curve of a panel.

    The first ``len(LINESTYLES) * len(MARKERS)`` (20) curves all differ in their pair
    of line style and marker. A curve of many points gets about a dozen markers,
    started at a different point for each curve so that equal curves show both.

    Args:
        index: the curve's position in its panel, from 0.
        points: the number of points of the curve.
    """
    step = max(1, math.ceil(points / _MARKERS_PER_CURVE))
    return {
        **line_and_marker(index),
        "markevery": (index % step, step),
        "markerfacecolor": "none",
        "markersize": 5,
    }


def legend_outside(
    axes: Axes,
    handles: Sequence[Artist | tuple[Artist, ...]] | None = None,
    labels: Sequence[str] | None = None,
) -> None:
    """The legend of ``axes`` to the right of it, top-aligned (the figure needs a constrained layout)."""
    entries = () if handles is None else (handles, labels)
    axes.legend(*entries, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize="small")
