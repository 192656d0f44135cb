"""Figures shared by the chapters. Each function draws into a new figure and returns it.

One module per subject; every public function is re-exported here, so chapters call
``mb.plotting.<function>``.
"""

from .sine import plot_evaluation, plot_meta_loss, plot_sine_adaptation, plot_sine_tasks

__all__ = [
    "plot_evaluation",
    "plot_meta_loss",
    "plot_sine_adaptation",
    "plot_sine_tasks",
]
