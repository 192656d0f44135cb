"""Figures shared by the chapters. Each function draws into a new figure and returns it.

One module per subject; every public function is re-exported here, so chapters call
``mb.plotting.<function>``.
"""

from .costs import plot_costs
from .navigation import plot_navigation_paths, plot_navigation_training, plot_returns_by_step
from .regression import plot_fit, plot_versus
from .sine import plot_evaluation, plot_meta_loss, plot_sine_adaptation, plot_sine_tasks
from .surfaces import (
    linear_regression_surface,
    plot_loss_curves,
    plot_path_on_contours,
    plot_path_on_curve,
    plot_points_and_lines,
    plot_task_family_landscape,
)

__all__ = [
    "linear_regression_surface",
    "plot_costs",
    "plot_evaluation",
    "plot_fit",
    "plot_loss_curves",
    "plot_meta_loss",
    "plot_navigation_paths",
    "plot_navigation_training",
    "plot_path_on_contours",
    "plot_path_on_curve",
    "plot_points_and_lines",
    "plot_returns_by_step",
    "plot_sine_adaptation",
    "plot_sine_tasks",
    "plot_task_family_landscape",
    "plot_versus",
]
