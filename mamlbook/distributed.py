"""Scaling out: one meta-batch shared by several processes with torch.distributed (appendix).

Every process draws the whole meta-batch from the same seeded generator and keeps its
own share of the tasks (``Ranks.share``), so the union of the shares is the
single-process meta-batch whatever the number of processes, and a checkpoint resumes
with any number of them. Each process computes its share's meta-gradient with the
book's one core (``maml_loss``, or Reptile's step). One all-reduce then sums every
process's contribution weighted by its share of the T tasks,

    g = sum_r (T_r / T) * g_r = (1/T) sum_t g_t,

the single-process meta-gradient, and every process takes the same outer step from the
same theta. PyTorch's DistributedDataParallel is not used: its all-reduce is run by
hooks on ``.grad`` accumulation, which the inner loop's ``torch.autograd.grad`` never
triggers, and it weighs the processes equally, which uneven shares do not allow (the
appendix "Scaling out" says more).

The same all-reduce carries each process's verdict: a process whose loss turned NaN or
infinite sends a flag instead of a gradient, and every process then raises that
process's error. A process that dies, or stops answering for the group's timeout, makes
the others raise ``DistributedError``.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import functools
import os
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from ._checks import check_positive_float
from .errors import NonFiniteLossError

TIMEOUT_S = 300.0
"""Seconds a process waits in a collective for the others before it gives up, by default."""

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""The environment variables that ``torchrun`` sets for each process it starts."""


class DistributedError(RuntimeError):
    """Another process of the group has died or has stopped answering."""


@dataclasses.dataclass(frozen=True)
class Ranks:
    """The processes that share each meta-batch, as seen from one of them.

    Attributes:
        rank: this process's number in the group, 0 to ``world_size - 1``.
        world_size: the number of processes; 1 runs alone, without collectives.
        group: the ``torch.distributed`` process group; None when alone.
    """

    rank: int = 0
    world_size: int = 1
    group: dist.ProcessGroup | None = None

    @property
    def writes(self) -> bool:
        """True in rank 0 alone, the process that writes checkpoints, records and progress bars."""
        return self.rank == 0

    def share(self, num_tasks: int) -> slice:
        """This process's tasks of a meta-batch of ``num_tasks``: a contiguous slice.

        The first ``num_tasks % world_size`` processes take one task more than the others.
        """
        base, extra = divmod(num_tasks, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's, so that every process starts alike."""
        if self.world_size == 1:
            return
        source = dist.get_global_rank(self.group, 0)
        with torch.no_grad():
            for tensor in tensors:
                self._collective(dist.broadcast, tensor, src=source)

    def from_writer(self, read: Callable[[], object]) -> object:
        """``read()``, run by rank 0 alone; its result, or the error it raised, in every process.

        A checkpoint is read this way: only rank 0 needs to see the file.

        Raises:
            ValueError, OSError: what ``read()`` raised, in every process alike.
        """
        if self.world_size == 1:
            return read()
        outcome = None
        if self.writes:
            try:
                outcome = (read(), None)
            except (ValueError, OSError) as error:
                outcome = (None, error)
        objects = [outcome]
        self._collective(dist.broadcast_object_list, objects, src=dist.get_global_rank(self.group, 0))
        result, error = objects[0]
        if error is not None:
            raise error
        return result

    def task_weighted_sum(
        self,
        values: Sequence[torch.Tensor | None],
        loss: torch.Tensor | None,
        *,
        like: Sequence[torch.Tensor],
        share_tasks: int,
        num_tasks: int,
        failure: NonFiniteLossError | None = None,
    ) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        """Sum each value over the processes, weighted by each one's share of the tasks.

        Each process passes the means over its own ``share_tasks`` tasks (its
        meta-gradients and its meta-loss), and receives the means over all
        ``num_tasks``: sum_r (T_r / T) * value_r. One all-reduce carries them all.

        Args:
            values: this process's tensors; None for one it has no value of (a
                parameter without a gradient).
            loss: this process's mean loss, a scalar; None with ``failure``.
            like: the tensors that ``values`` belong to (theta), for their shapes and
                dtypes; they are summed on the device of the first.
            share_tasks: T_r, the tasks this process computed.
            num_tasks: T, the tasks of the meta-batch.
            failure: the error this process hit instead of computing ``values``.

        Returns:
            The sums, in the order of ``values`` (None where no process had a value),
            and the meta-loss over all tasks.

        Raises:
            NonFiniteLossError: on every process, when any process passed a ``failure``;
                the message is the first such process's, naming it and its tasks.
            DistributedError: another process died or did not answer within the timeout.
        """
        if self.world_size == 1:
            if failure is not None:
                raise failure
            return list(values), loss
        if failure is not None:
            values, loss = [None] * len(like), None
        weight = share_tasks / num_tasks
        dtype = functools.reduce(torch.promote_types, (tensor.dtype for tensor in like))
        options = {"dtype": dtype, "device": like[0].device}
        parts = [
            torch.zeros(tensor.numel(), **options) if value is None else (value.detach() * weight).reshape(-1)
            for value, tensor in zip(values, like, strict=True)
        ]
        parts.append(torch.zeros(1, **options) if loss is None else (loss.detach() * weight).reshape(1))
        flags = [value is not None for value in values] + [failure is not None]
        buffer = torch.cat([part.to(**options) for part in parts] + [torch.tensor(flags, **options)])
        self._collective(dist.all_reduce, buffer)
        if buffer[-1] > 0:
            raise self._first_failure(failure, num_tasks)
        sums, offset = [], 0
        for tensor, anyone_had_it in zip(like, buffer[-len(flags) : -1].tolist(), strict=True):
            part = buffer[offset : offset + tensor.numel()].view_as(tensor).to(tensor.dtype)
            sums.append(part if anyone_had_it else None)
            offset += tensor.numel()
        return sums, buffer[offset]

    def _first_failure(self, failure: NonFiniteLossError | None, num_tasks: int) -> NonFiniteLossError:
        """The error of the lowest-ranked process that failed, worded alike on every process."""
        messages: list[str | None] = [None] * self.world_size
        self._collective(dist.all_gather_object, messages, None if failure is None else str(failure))
        rank = next(rank for rank, message in enumerate(messages) if message is not None)
        tasks = Ranks(rank, self.world_size).share(num_tasks)
        return NonFiniteLossError(
            f"process {rank} of {self.world_size}, which computed tasks {tasks.start} to "
            f"{tasks.stop - 1} of the meta-batch (its task i is the meta-batch's task "
            f"{tasks.start} + i): {messages[rank]}"
        )

    def _collective(self, operation, *args, **kwargs) -> None:
        """Run one ``torch.distributed`` collective, its failure reported as ``DistributedError``."""
        try:
            operation(*args, group=self.group, **kwargs)
        except RuntimeError as error:
            raise DistributedError(
                f"process {self.rank} of {self.world_size}: another process has died or stopped "
                f"answering, so this one stops too ({type(error).__name__}: {str(error).splitlines()[0]}). "
                "Restart the run: with a checkpoint, it resumes from the last one written"
            ) from error


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or alike) as one of several."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def launch_rank() -> int:
    """This process's rank: in the default group when one is started, else torchrun's ``RANK``, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def launch_world_size() -> int:
    """The number of processes: the default group's size, else torchrun's ``WORLD_SIZE``, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group(*, device: torch.device, timeout_s: float = TIMEOUT_S) -> None:
    """Start the default process group from ``torchrun``'s environment variables.

    The backend is NCCL for a CUDA ``device``, gloo otherwise. The group is closed when
    the interpreter exits.

    Args:
        device: where this process trains.
        timeout_s: how long a collective waits for the other processes before it fails.
    """
    timeout = datetime.timedelta(seconds=check_positive_float("timeout_s", timeout_s))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    """Close the group started here before the interpreter exits: a gloo group left open can
    abort the process on its way out ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Each process's own GPU: ``cuda`` becomes ``cuda:LOCAL_RANK`` when processes share a machine."""
    if ranks.world_size == 1 or device.type != "cuda" or device.index is not None:
        return device
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ranks.rank)) % torch.cuda.device_count())
    torch.cuda.set_device(local)
    return local


def resolve_ranks(process_group: str | dist.ProcessGroup | None, *, device: torch.device) -> Ranks:
    """The processes that ``meta_train`` shares its meta-batches with.

    Args:
        process_group: ``"auto"``: the default group when one is started, or one started
            here when ``torchrun`` launched several processes, else this process alone;
            a ``torch.distributed.ProcessGroup``: that group; None: this process alone.
        device: where this process trains (for the backend of a group started here).
    """
    if process_group is None:
        return Ranks()
    if isinstance(process_group, str) and process_group == "auto":
        if not dist.is_available():
            return Ranks()
        if not dist.is_initialized():
            if not launched_by_torchrun():
                return Ranks()
            init_process_group(device=device)
        process_group = dist.group.WORLD
    elif not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"process_group must be 'auto', None or a torch.distributed.ProcessGroup, got {process_group!r}"
        )
    world_size = dist.get_world_size(process_group)
    if world_size == 1:
        return Ranks()
    return Ranks(dist.get_rank(process_group), world_size, process_group)
