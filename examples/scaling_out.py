"""Meta-train on sine waves in as many processes as torchrun starts: the numbers of one process.

The script is an ordinary ``mamlbook.meta_train`` call. Launched by ``torchrun``, each
process computes its share of every meta-batch and the processes average their
meta-gradients before each Adam step (the appendix "Scaling out"). It trains in float64,
so its output is the same, to the digits printed, whatever the number of processes.

Run it from the repository root::

    python examples/scaling_out.py                                     # one process
    torchrun --standalone --nproc_per_node 2 examples/scaling_out.py   # two, on this machine

and on several machines, the same command on each (see the appendix)::

    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \\
        --rdzv_id sine examples/scaling_out.py --device cuda
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F

import mamlbook as mb


def sample_float64_tasks(num_tasks: int, *, generator: torch.Generator) -> mb.TaskBatch:
    """The paper's sine-wave tasks, K = 10 support and 10 query points, in float64."""
    batch = mb.tasks.Sinusoid().sample(num_tasks, k_shot=10, n_query=10, generator=generator)
    return mb.TaskBatch(*(tensor.double() for tensor in batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--meta-batch-size", type=int, default=25)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--checkpoint", help="write a checkpoint here every 50 iterations; resume from it")
    args = parser.parse_args()

    config = mb.MetaTrainConfig(iterations=args.iterations, meta_batch_size=args.meta_batch_size)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = mb.models.MLP(1).double()
    train = functools.partial(mb.meta_train, loss_fn=F.mse_loss, device=args.device, progress=False)
    history = train(model, sample_float64_tasks, config, checkpoint=args.checkpoint, checkpoint_every=50)

    if mb.distributed.launch_rank() == 0:
        theta = torch.cat([tensor.detach().flatten() for tensor in model.parameters()])
        print(f"processes: {mb.distributed.launch_world_size()}")
        print(
            f"meta-loss, first and last iteration: {history.meta_losses[0]:.8f} {history.meta_losses[-1]:.8f}"
        )
        print(f"theta: {theta.numel()} numbers, sum of squares {float(theta.square().sum()):.8f}")


if __name__ == "__main__":
    main()
