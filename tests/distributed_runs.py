"""Training runs that ``tests/test_distributed.py`` launches in several processes.

Run as ``torchrun --standalone --nproc_per_node 2 tests/distributed_runs.py OUT RUN...``
(or as processes given torchrun's environment variables by hand): each process writes
what it ended with to ``OUT/<run>_rank<r>.pt``, or the error it stopped with. The test
computes the same runs in one process, with the builders below, and compares.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.models import MLP
from mamlbook.reptile import ReptileConfig, reptile_train

MAML = mb.MetaTrainConfig(iterations=2, meta_batch_size=4, inner_lr=0.05, inner_steps=2, outer_lr=0.01)
CONFIGS = {
    "maml": MAML,
    "maml_uneven": dataclasses.replace(MAML, meta_batch_size=5),
    "first_order": dataclasses.replace(MAML, meta_batch_size=5, first_order=True),
    "meta_sgd": dataclasses.replace(MAML, meta_batch_size=5, learned_inner_lr="per_parameter"),
    "maml_plus_plus": dataclasses.replace(
        MAML, meta_batch_size=3, learned_inner_lr="per_layer_per_step", multi_step_loss_iterations=2
    ),
    "reptile": ReptileConfig(
        iterations=2, meta_batch_size=5, inner_lr=0.05, inner_steps=3, outer_step_size=0.5
    ),
}
"""The runs whose result must not depend on the number of processes, by name."""

LONG_RUN = dataclasses.replace(MAML, iterations=300, meta_batch_size=5)
"""A run long enough, with a model large enough, to be killed while it writes a checkpoint."""


def make_model(hidden: tuple[int, ...] = (16, 16)) -> MLP:
    """The same float64 MLP in every process (the training broadcasts rank 0's anyway)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return MLP(1, hidden).double()


def sample_tasks(num_tasks: int, *, generator: torch.Generator) -> mb.TaskBatch:
    """Sine-wave tasks in float64, K = 5 support and 6 query points."""
    batch = mb.tasks.Sinusoid().sample(num_tasks, k_shot=5, n_query=6, generator=generator)
    return mb.TaskBatch(*(tensor.double() for tensor in batch))


def train(name: str, model: MLP, **options) -> mb.TrainingHistory:
    """Run ``CONFIGS[name]`` (or ``config=``) on ``model`` (on the CPU, without a progress bar)."""
    config = options.pop("config", CONFIGS[name])
    learner = reptile_train if isinstance(config, ReptileConfig) else mb.meta_train
    options = {"loss_fn": F.mse_loss, "device": "cpu", "progress": False, **options}
    return learner(model, options.pop("sample_tasks", sample_tasks), config, **options)


def result(model: MLP, history: mb.TrainingHistory) -> dict[str, object]:
    """What a run ends with: theta, its last meta-gradient, the meta-losses, learned rates."""
    return {
        "params": {name: tensor.detach().clone() for name, tensor in model.named_parameters()},
        "grads": {name: tensor.grad for name, tensor in model.named_parameters()},
        "meta_losses": history.meta_losses,
        "inner_lr": history.inner_lr,
    }


def meta_sgd_rate_gradients(ranks: mb.distributed.Ranks) -> dict[str, torch.Tensor]:
    """The meta-gradient of Meta-SGD's rates (and of theta) on one batch of 5 tasks, summed
    over the processes' shares as ``meta_train`` sums them."""
    model = make_model()
    params = dict(model.named_parameters())
    rates = {name: torch.full_like(tensor, 0.05, requires_grad=True) for name, tensor in params.items()}
    batch = sample_tasks(5, generator=torch.Generator().manual_seed(3))
    share = ranks.share(5)
    loss = mb.maml_loss(
        model,
        params,
        batch.slice_tasks(share.start, share.stop),
        loss_fn=F.mse_loss,
        inner_lr=rates,
        inner_steps=2,
    )
    loss.backward()
    tensors = [*params.values(), *rates.values()]
    sums, _ = ranks.task_weighted_sum(
        [tensor.grad for tensor in tensors],
        loss,
        like=tensors,
        share_tasks=share.stop - share.start,
        num_tasks=5,
    )
    names = [*(f"params.{name}" for name in params), *(f"rates.{name}" for name in rates)]
    return dict(zip(names, sums, strict=True))


def nan_in_task(task: int, at_iteration: int):
    """``sample_tasks`` with NaN in task ``task``'s query targets at meta-iteration ``at_iteration``."""
    drawn = {"batches": 0}

    def sample(num_tasks: int, *, generator: torch.Generator) -> mb.TaskBatch:
        batch = sample_tasks(num_tasks, generator=generator)
        if drawn["batches"] == at_iteration:
            batch.query_y[task, 0] = float("nan")
        drawn["batches"] += 1
        return batch

    return sample


def stop_rank(rank: int, at_iteration: int, how: str):
    """``sample_tasks`` after which process ``rank`` dies (``how="kill"``) or hangs (``"hang"``)
    when it draws the batch of ``at_iteration``."""
    drawn = {"batches": 0}

    def sample(num_tasks: int, *, generator: torch.Generator) -> mb.TaskBatch:
        if drawn["batches"] == at_iteration and int(os.environ["RANK"]) == rank:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)
        drawn["batches"] += 1
        return sample_tasks(num_tasks, generator=generator)

    return sample


def value_error_of(function) -> dict[str, str | None]:
    """The message of the ``ValueError`` that ``function()`` raises, None when it raises none."""
    try:
        function()
    except ValueError as error:
        return {"message": str(error)}
    return {"message": None}


def run(name: str, out: Path, ranks: mb.distributed.Ranks) -> object:
    """One named run in this process; what it returns is saved."""
    if name in CONFIGS:
        model = make_model()
        return result(model, train(name, model))
    if name == "meta_sgd_rate_gradients":
        return meta_sgd_rate_gradients(ranks)
    if name == "nan_in_second_share":  # tasks 3 and 4 of 5 are rank 1's
        model = make_model()
        try:
            train("maml_uneven", model, sample_tasks=nan_in_task(4, at_iteration=1))
        except mb.NonFiniteLossError as error:
            return {
                "message": str(error),
                "history": error.history.meta_losses,
                "params": result(model, error.history)["params"],
            }
        return {"message": None}
    if name in ("resume_from_one", "checkpoint_for_one"):  # 2 iterations more, or the first 2 of 4
        model = make_model()
        config = dataclasses.replace(CONFIGS["maml_uneven"], iterations=4 if name == "resume_from_one" else 2)
        return result(model, train("maml_uneven", model, config=config, checkpoint=out / f"{name}.ckpt"))
    if name == "foreign_checkpoint":  # a file that the test wrote, not a checkpoint
        return value_error_of(lambda: train("maml", make_model(), checkpoint=out / f"{name}.ckpt"))
    if name == "too_few_tasks":
        return value_error_of(
            lambda: train("maml", make_model(), config=dataclasses.replace(MAML, meta_batch_size=1))
        )
    if name == "checkpointed_every_iteration":  # alone, killed and restarted by the test
        model = make_model(hidden=(256, 256))
        history = train("maml", model, config=LONG_RUN, checkpoint=out / f"{name}.ckpt", checkpoint_every=1)
        return result(model, history)
    if name in ("killed_rank", "hung_rank"):
        sampler = stop_rank(1, at_iteration=3, how="kill" if name == "killed_rank" else "hang")
        config = dataclasses.replace(CONFIGS["maml_uneven"], iterations=20)
        train("maml_uneven", make_model(), config=config, sample_tasks=sampler)
        return {"finished": True}
    raise ValueError(f"no run named {name!r}")


def main(argv: list[str]) -> None:
    out, names = Path(argv[0]), argv[1:]
    if mb.distributed.launched_by_torchrun():
        timeout_s = float(os.environ.get("RUN_TIMEOUT_S", mb.distributed.TIMEOUT_S))
        mb.distributed.init_process_group(device=torch.device("cpu"), timeout_s=timeout_s)
    ranks = mb.distributed.resolve_ranks("auto", device=torch.device("cpu"))
    for name in names:
        torch.save(run(name, out, ranks), out / f"{name}_rank{ranks.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1:])
