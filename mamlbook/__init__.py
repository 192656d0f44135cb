"""mamlbook: the package behind the book *Model-Agnostic Meta-Learning, from scratch*.

The core API, re-exported here:

- ``Params``, ``TaskBatch``, ``InnerLR``: the data types.
- ``adapt``: the inner loop on one task; ``maml_loss``: the meta-objective over T tasks.
- ``meta_train``, ``MetaTrainConfig``: the outer loop; ``evaluate``: losses on new tasks.
- ``save_params``, ``load_params``: checkpoints.

Submodules: ``tasks``, ``models``, ``gradcheck``, ``outer`` (the outer optimiser),
and, loaded on first use (they import more, matplotlib for one), ``data`` (Omniglot),
``plotting``, ``checks``, ``baselines``, ``reptile``, ``profiling`` and ``analysis``.
Importing the package changes no global state.
"""

import importlib

from . import gradcheck, models, outer, tasks
from .checkpoint import load_params, save_params
from .evaluation import EvaluationResult, evaluate
from .inner import adapt
from .meta import maml_loss
from .training import MetaTrainConfig, TrainingHistory, meta_train, resolve_device
from .types import InnerLR, LossFn, Params, TaskBatch
from .validation import NonFiniteLossError

__version__ = "0.1.0"

_LAZY_SUBMODULES = frozenset(
    {"data", "plotting", "checks", "baselines", "reptile", "profiling", "analysis", "reproduce"}
)


def __getattr__(name: str):
    """Import the submodules of ``_LAZY_SUBMODULES`` when first used, as ``mb.plotting``."""
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EvaluationResult",
    "InnerLR",
    "LossFn",
    "MetaTrainConfig",
    "NonFiniteLossError",
    "Params",
    "TaskBatch",
    "TrainingHistory",
    "adapt",
    "evaluate",
    "gradcheck",
    "load_params",
    "maml_loss",
    "meta_train",
    "models",
    "outer",
    "resolve_device",
    "save_params",
    "tasks",
]
