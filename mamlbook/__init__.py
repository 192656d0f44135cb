"""mamlbook: the package behind the book *Model-Agnostic Meta-Learning, from scratch*.

The core API, re-exported here:

- ``Params``, ``TaskBatch``: the data types.
- ``adapt``: the inner loop on one task; ``maml_loss``: the meta-objective over T tasks.
- ``meta_train``, ``MetaTrainConfig``: the outer loop; ``evaluate``: losses on new tasks.
- ``save_params``, ``load_params``: checkpoints.

Submodules: ``tasks``, ``models``, ``plotting``, ``gradcheck``. Importing the package
changes no global state.
"""

from . import gradcheck, models, plotting, tasks
from .checkpoint import load_params, save_params
from .evaluation import EvaluationResult, evaluate
from .inner import adapt
from .meta import maml_loss
from .training import MetaTrainConfig, TrainingHistory, meta_train, resolve_device
from .types import LossFn, Params, TaskBatch
from .validation import NonFiniteLossError

__version__ = "0.1.0"

__all__ = [
    "EvaluationResult",
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
    "plotting",
    "resolve_device",
    "save_params",
    "tasks",
]
