"""Saving and loading meta-learned parameters."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ._checks import check_bool, check_params
from ._files import write_atomically
from .types import Params


def save_params(
    params: Mapping[str, torch.Tensor], path: str | os.PathLike, *, allow_non_finite: bool = False
) -> Path:
    """Write ``params`` (detached, on the CPU) to ``path`` atomically.

    The file is written beside its destination and renamed into place, so an
    interrupted save never leaves a half-written file. It is a plain dict of tensors,
    which ``model.load_state_dict`` also accepts; a tensor that is a view of a larger one
    is saved as its own data alone.

    Args:
        params: the tensors, by name.
        path: the file to write; its folder must exist.
        allow_non_finite: save tensors that hold NaN or inf too (refused by default:
            they are the mark of a training run that diverged).

    Returns:
        The path written.
    """
    if not isinstance(params, Mapping) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in params.items()
    ):
        raise TypeError("params must be a dict from parameter name (str) to torch.Tensor")
    if not check_bool("allow_non_finite", allow_non_finite):
        for name, tensor in params.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(
                    f"params[{name!r}] holds NaN or inf, the mark of a diverged run; "
                    "pass allow_non_finite=True to save it anyway"
                )
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: the folder {str(path.parent)!r} does not exist")
    state = {name: tensor.detach().cpu().clone() for name, tensor in params.items()}  # a view's data alone
    write_atomically(path, functools.partial(torch.save, state))
    return path


def load_params(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    map_location: str | torch.device = "cpu",
) -> Params:
    """Read parameters written by ``save_params`` with ``torch.load(weights_only=True)``.

    Args:
        path: the file.
        model: when given, the loaded params are checked against it: names, shapes and dtypes.
        map_location: where to put the tensors.

    Returns:
        The parameters, as plain tensors (no gradient).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no parameter file at {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"path: {str(path)!r} is not a parameter file written by save_params ({error})"
        ) from error
    if not isinstance(state, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in state.items()
    ):
        raise ValueError(f"path: {str(path)!r} does not hold a dict of named tensors")
    if model is not None:
        check_params(model, state)
        for name, tensor in model.named_parameters():
            if state[name].dtype != tensor.dtype:
                raise ValueError(
                    f"path: {str(path)!r} holds {name!r} as {state[name].dtype} but the model's is "
                    f"{tensor.dtype}; convert the model (model.to({state[name].dtype})) or the loaded tensors"
                )
    return state


TRAINING_FORMAT = "mamlbook training checkpoint 1"
"""The ``format`` entry of a training checkpoint, changed whenever its layout changes."""


def save_training_state(path: Path, state: dict[str, object]) -> None:
    """Write a training checkpoint (``mamlbook.training.outer_loop``'s state) atomically.

    A run killed while it writes leaves the previous checkpoint in place, never a
    half-written one.
    """
    write_atomically(path, functools.partial(torch.save, {"format": TRAINING_FORMAT, **state}))


def load_training_state(path: Path, *, learner: str, config: dict[str, object]) -> dict[str, object]:
    """Read a training checkpoint written by ``save_training_state`` for this run.

    Args:
        path: the file.
        learner: the training it must come from (``"meta-training"``, ``"Reptile"``).
        config: the run's configuration, as ``dataclasses.asdict`` gives it; the
            checkpoint's must be the same except for ``iterations``, which a resumed run
            may raise.

    Raises:
        ValueError: the file is not such a checkpoint, or comes from another run.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint: {str(path)!r} is not a training checkpoint ({error})") from error
    if not isinstance(state, dict) or state.get("format") != TRAINING_FORMAT:
        raise ValueError(f"checkpoint: {str(path)!r} is not a training checkpoint of this mamlbook version")
    if state["learner"] != learner:
        raise ValueError(f"checkpoint: {str(path)!r} comes from {state['learner']}, not from {learner}")
    differences = [
        f"{name} {state['config'].get(name)!r} (now {value!r})"
        for name, value in config.items()
        if name != "iterations" and state["config"].get(name) != value
    ]
    if differences:
        raise ValueError(
            f"checkpoint: {str(path)!r} comes from a run with other settings: {', '.join(differences)}; "
            "give another checkpoint path to start a new run"
        )
    if state["iteration"] > config["iterations"]:
        raise ValueError(
            f"checkpoint: {str(path)!r} is at meta-iteration {state['iteration']}, past the "
            f"{config['iterations']} iterations asked for"
        )
    return state
