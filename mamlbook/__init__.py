"""mamlbook: the package behind the book *Model-Agnostic Meta-Learning, from scratch*.

The core API, re-exported here:

- ``Params``, ``TaskBatch``, ``InnerLR``, ``TaskLosses``: the data types.
- ``InnerLoop``: the inner loop's options as one value.
- ``adapt``, ``adapt_tasks``: the inner loop on one task, on T at once;
  ``maml_loss``: the meta-objective over T tasks.
- ``meta_train``, ``MetaTrainConfig``: the outer loop; ``evaluate``: losses on new tasks.
- ``save_params``, ``load_params``: checkpoints; ``NonFiniteLossError``.
- ``allow_broadcasting``: marks a loss that takes predictions and targets of other shapes.

Submodules: ``inner`` (the inner loop), ``meta`` (MAML), ``reference`` (the same as a
plain loop), ``backends`` and ``fast`` (faster ways to compute it), ``tasks``,
``models``, ``gradcheck``, ``outer`` (the outer optimiser), ``distributed`` (meta-batches
shared by several processes), ``errors``, and, loaded on
first use (they import more, matplotlib for one), ``data`` (Omniglot), ``plotting``,
``checks``, ``baselines``, ``reptile``, ``profiling``, ``analysis``, ``reproduce``,
``rl`` (reinforcement learning, chapter 8) and ``assignments`` (student notebooks and a
grader, for instructors).
Importing the package changes no global state.
"""

import importlib

from . import backends, distributed, errors, fast, gradcheck, inner, meta, models, outer, reference, tasks
from ._checks import allow_broadcasting
from .checkpoint import load_params, save_params
from .errors import NonFiniteLossError
from .evaluation import EvaluationResult, evaluate
from .inner import InnerLoop
from .meta import adapt, adapt_tasks, maml_loss
from .training import MetaTrainConfig, TrainingHistory, meta_train, resolve_device
from .types import InnerLR, LossFn, Params, TaskBatch, TaskLosses, TaskSampler

__version__ = "0.1.0"

_LAZY_SUBMODULES = frozenset(
    {
        "data",
        "plotting",
        "checks",
        "baselines",
        "reptile",
        "profiling",
        "analysis",
        "reproduce",
        "rl",
        "assignments",
    }
)


def __getattr__(name: str):
    """Import the submodules of ``_LAZY_SUBMODULES`` when first used, as ``mb.plotting``."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EvaluationResult",
    "InnerLR",
    "InnerLoop",
    "LossFn",
    "MetaTrainConfig",
    "NonFiniteLossError",
    "Params",
    "TaskBatch",
    "TaskLosses",
    "TaskSampler",
    "TrainingHistory",
    "adapt",
    "adapt_tasks",
    "allow_broadcasting",
    "backends",
    "distributed",
    "errors",
    "evaluate",
    "fast",
    "gradcheck",
    "inner",
    "load_params",
    "maml_loss",
    "meta",
    "meta_train",
    "models",
    "outer",
    "reference",
    "resolve_device",
    "save_params",
    "tasks",
]
