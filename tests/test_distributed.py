"""Meta-training shared by two processes (gloo, CPU, float64) gives one process's numbers.

The runs themselves are in ``tests/distributed_runs.py``; each test here computes the
same run in this process and compares. Faults are launched as separate processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import distributed_runs as runs
import pytest
import torch
import torch.nn.functional as F

import mamlbook as mb
from mamlbook.checkpoint import load_training_state
from mamlbook.distributed import Ranks

RUNS = Path(runs.__file__)
TORCHRUN = Path(sys.executable).with_name("torchrun")
TOLERANCE = 1e-12
TWO_PROCESS_RUNS = (
    *runs.CONFIGS,
    "meta_sgd_rate_gradients",
    "nan_in_second_share",
    "resume_from_one",
    "checkpoint_for_one",
    "too_few_tasks",
    "foreign_checkpoint",
)


def one_process_environment() -> dict[str, str]:
    """This environment without torchrun's variables, one thread per process."""
    launch = mb.distributed.TORCHRUN_VARIABLES
    environment = {name: value for name, value in os.environ.items() if name not in launch}
    return {**environment, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """Every run of ``TWO_PROCESS_RUNS``, once, under ``torchrun --nproc_per_node 2``.

    The checkpoint that ``resume_from_one`` resumes is written first, by this process, and
    so is the file that ``foreign_checkpoint`` is given.
    """
    out = tmp_path_factory.mktemp("two_processes")
    model = runs.make_model()
    first_two = dataclasses.replace(runs.CONFIGS["maml_uneven"], iterations=2)
    runs.train(
        "maml_uneven", model, config=first_two, checkpoint=out / "resume_from_one.ckpt", process_group=None
    )
    (out / "foreign_checkpoint.ckpt").write_bytes(b"not a checkpoint")
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(RUNS), str(out), *TWO_PROCESS_RUNS]
    finished = subprocess.run(
        command, env=one_process_environment(), capture_output=True, text=True, timeout=600, check=False
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return out


def saved(out: Path, name: str, rank: int) -> dict[str, object]:
    return torch.load(out / f"{name}_rank{rank}.pt", weights_only=False)


def largest_difference(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> float:
    assert first.keys() == second.keys()
    return max(float((first[name] - second[name]).abs().max()) for name in first)


def one_process(name: str, **options) -> dict[str, object]:
    model = runs.make_model()
    return runs.result(model, runs.train(name, model, process_group=None, **options))


@pytest.mark.parametrize("name", list(runs.CONFIGS))
def test_two_processes_give_one_process_meta_gradient_and_theta(two_processes, name):
    alone = one_process(name)
    first, second = saved(two_processes, name, 0), saved(two_processes, name, 1)
    for name_, tensor in first["params"].items():
        assert torch.equal(tensor, second["params"][name_]), f"{name_} differs between the processes"
    assert largest_difference(first["params"], alone["params"]) < TOLERANCE
    assert torch.allclose(first["meta_losses"], alone["meta_losses"], rtol=0, atol=TOLERANCE)
    if name != "reptile":  # Reptile leaves no gradient: its step is theta's difference, checked above
        assert largest_difference(first["grads"], alone["grads"]) < TOLERANCE
        assert largest_difference(second["grads"], alone["grads"]) < TOLERANCE
    if runs.CONFIGS[name].__class__.__name__ == "MetaTrainConfig" and runs.CONFIGS[name].learned_inner_lr:
        rates = alone["inner_lr"] if isinstance(alone["inner_lr"], dict) else alone["inner_lr"][0]
        theirs = first["inner_lr"] if isinstance(first["inner_lr"], dict) else first["inner_lr"][0]
        assert largest_difference(theirs, rates) < TOLERANCE
        assert (
            largest_difference(theirs, {name_: torch.full_like(rate, 0.05) for name_, rate in rates.items()})
            > 1e-6
        )


def test_the_meta_gradient_of_meta_sgd_rates_is_summed_by_task_share(two_processes):
    model = runs.make_model()
    params = dict(model.named_parameters())
    rates = {name: torch.full_like(tensor, 0.05, requires_grad=True) for name, tensor in params.items()}
    batch = runs.sample_tasks(5, generator=torch.Generator().manual_seed(3))
    mb.maml_loss(model, params, batch, loss_fn=F.mse_loss, inner_lr=rates, inner_steps=2).backward()
    expected = {f"params.{name}": tensor.grad for name, tensor in params.items()}
    expected |= {f"rates.{name}": rate.grad for name, rate in rates.items()}
    for rank in (0, 1):
        assert largest_difference(saved(two_processes, "meta_sgd_rate_gradients", rank), expected) < TOLERANCE


def test_a_non_finite_loss_in_one_process_stops_both_with_its_error(two_processes):
    first, second = (saved(two_processes, "nan_in_second_share", rank) for rank in (0, 1))
    assert first["message"] is not None and first["message"] == second["message"]
    assert first["message"].startswith("meta-iteration 1: process 1 of 2, which computed tasks 3 to 4")
    assert "non-finite query loss for task 1: its query set holds NaN" in first["message"]
    assert len(first["history"]) == 1
    after_one = one_process(
        "maml_uneven", config=dataclasses.replace(runs.CONFIGS["maml_uneven"], iterations=1)
    )
    assert largest_difference(first["params"], after_one["params"]) < TOLERANCE  # theta kept as before


def test_every_process_refuses_fewer_tasks_than_processes(two_processes):
    for rank in (0, 1):
        message = saved(two_processes, "too_few_tasks", rank)["message"]
        assert message.startswith("meta_batch_size (1) must be at least the number of processes (2)")


def test_every_process_refuses_a_file_that_is_not_a_checkpoint(two_processes):
    messages = [saved(two_processes, "foreign_checkpoint", rank)["message"] for rank in (0, 1)]
    assert messages[0] == messages[1] and "is not a training checkpoint" in messages[0]


@pytest.mark.parametrize("name", ["resume_from_one", "checkpoint_for_one"])
def test_a_checkpoint_resumes_with_another_number_of_processes(two_processes, tmp_path, name):
    four = dataclasses.replace(runs.CONFIGS["maml_uneven"], iterations=4)
    uninterrupted = one_process("maml_uneven", config=four)
    if name == "resume_from_one":  # one process took 2 iterations, two processes the next 2
        resumed = saved(two_processes, name, 0)
    else:  # two processes took 2 iterations, one process the next 2
        checkpoint = tmp_path / "two.ckpt"
        shutil.copy(two_processes / f"{name}.ckpt", checkpoint)
        resumed = one_process("maml_uneven", config=four, checkpoint=checkpoint)
    assert largest_difference(resumed["params"], uninterrupted["params"]) < TOLERANCE
    assert len(resumed["meta_losses"]) == 4
    assert torch.allclose(resumed["meta_losses"], uninterrupted["meta_losses"], rtol=0, atol=TOLERANCE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two(tmp_path: Path, name: str, timeout_s: float) -> list[subprocess.Popen]:
    """Two processes of ``name`` with torchrun's environment set by hand (no torchrun agent
    to stop the survivor), their collectives timing out after ``timeout_s``."""
    port, processes = free_port(), []
    for rank in (0, 1):
        environment = {
            **one_process_environment(),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RUN_TIMEOUT_S": str(timeout_s),
        }
        command = [sys.executable, str(RUNS), str(tmp_path), name]
        processes.append(subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True))
    return processes


@pytest.mark.parametrize("name", ["killed_rank", "hung_rank"])
def test_a_process_that_dies_or_hangs_ends_the_other_within_the_timeout(tmp_path, name):
    timeout_s = 8
    survivor, stopped = launch_two(tmp_path, name, timeout_s)
    try:
        started = time.monotonic()
        _, errors = survivor.communicate(timeout=120)
        waited = time.monotonic() - started
    finally:
        stopped.kill()
        stopped.communicate()
    assert survivor.returncode == 1
    assert "DistributedError: process 0 of 2: another process has died or stopped answering" in errors
    assert waited < 60 + timeout_s  # starting two processes, 3 iterations, then at most the timeout
    assert not (tmp_path / f"{name}_rank0.pt").exists()


def test_a_run_killed_while_it_writes_checkpoints_resumes_to_the_same_theta(tmp_path):
    checkpoint = tmp_path / "checkpointed_every_iteration.ckpt"
    command = [sys.executable, str(RUNS), str(tmp_path), "checkpointed_every_iteration"]
    picks = random.Random(0)
    for _ in range(3):
        process = subprocess.Popen(command, env=one_process_environment(), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(picks.uniform(0.0, 0.5))  # checkpoint_every=1: most of the time goes into writing
        process.send_signal(signal.SIGKILL)
        _, errors = process.communicate()
        assert process.returncode == -signal.SIGKILL, errors[-2000:]
        state = load_training_state(
            checkpoint, learner="meta-training", config=dataclasses.asdict(runs.LONG_RUN)
        )
        assert 0 < state["iteration"] < runs.LONG_RUN.iterations
    finished = subprocess.run(
        command, env=one_process_environment(), capture_output=True, text=True, check=False
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    resumed = torch.load(tmp_path / "checkpointed_every_iteration_rank0.pt", weights_only=False)
    model = runs.make_model(hidden=(256, 256))
    history = mb.meta_train(
        model, runs.sample_tasks, runs.LONG_RUN, loss_fn=F.mse_loss, device="cpu", progress=False
    )
    alone = runs.result(model, history)
    assert largest_difference(resumed["params"], alone["params"]) < TOLERANCE
    assert torch.allclose(resumed["meta_losses"], alone["meta_losses"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("num_tasks", "world_size"), [(1, 1), (2, 2), (5, 2), (5, 3), (32, 3), (32, 5)])
def test_the_shares_cover_the_meta_batch_once_and_differ_by_at_most_one_task(num_tasks, world_size):
    shares = [Ranks(rank, world_size).share(num_tasks) for rank in range(world_size)]
    assert [task for share in shares for task in range(share.start, share.stop)] == list(range(num_tasks))
    sizes = [share.stop - share.start for share in shares]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_one_process_runs_alone_without_a_group():
    ranks = mb.distributed.resolve_ranks("auto", device=torch.device("cpu"))
    assert ranks == Ranks() and ranks.writes
    values = [torch.ones(2)]
    assert (
        ranks.task_weighted_sum(values, torch.tensor(1.0), like=values, share_tasks=3, num_tasks=3)[0]
        == values
    )


def test_a_bad_process_group_is_refused():
    model = runs.make_model()
    with pytest.raises(
        TypeError, match="process_group must be 'auto', None or a torch.distributed.ProcessGroup"
    ):
        runs.train("maml", model, process_group="gloo")


REPOSITORY = Path(__file__).resolve().parents[1]
APPENDIX = REPOSITORY / "book" / "appendix_scaling.ipynb"
OMNIGLOT = REPOSITORY.parent / "shared" / "data" / "omniglot"


def appendix_commands() -> list[str]:
    """The commands in the appendix's ``bash`` blocks, continuation lines joined."""
    notebook = json.loads(APPENDIX.read_text(encoding="utf-8"))
    commands = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for block in re.findall(r"```bash\n(.*?)```", "".join(cell["source"]), flags=re.DOTALL):
                commands += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return commands


@pytest.mark.slow
def test_the_appendix_launch_commands_run_as_written(tmp_path):
    """Each ``torchrun`` command of the appendix, run by the shell in a folder with the
    repository's ``examples/``; the multi-machine one with one machine's values."""
    commands = [command for command in appendix_commands() if command.startswith("torchrun")]
    assert len(commands) == 3
    (tmp_path / "examples").symlink_to(REPOSITORY / "examples")
    environment = {
        **one_process_environment(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "NNODES": "1",
        "NPROC_PER_NODE": "2",
        "HOST": "127.0.0.1",
        "RUN_ID": "appendix-test",
    }
    outputs = []
    for command in commands:
        finished = subprocess.run(
            command, shell=True, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
        )
        assert finished.returncode == 0, f"{command}\n{finished.stderr[-3000:]}"
        outputs.append(finished.stdout)
    example_standalone, reproduce_output, example_multi_node = outputs
    assert example_standalone == example_multi_node and "processes: 2" in example_standalone
    assert "sinusoid (quick preset)" in reproduce_output
    record = json.loads((tmp_path / "sinusoid.json").read_text(encoding="utf-8"))
    assert record["environment"]["processes"] == 2


@pytest.mark.slow
@pytest.mark.skipif(
    not (REPOSITORY.parent / "shared/data/omniglot").is_dir(), reason="no local Omniglot copy"
)
def test_the_appendix_benchmark_command_runs(tmp_path):
    """The appendix's measuring command, from the repository root, shortened to one
    meta-iteration per launch."""
    [command] = [command for command in appendix_commands() if "benchmarks/distributed.py" in command]
    short = f"{command} --rounds 1 --warmup 0 --iterations 1 --json {tmp_path / 'record.json'}"
    command = short.replace(".venv/bin/python", sys.executable, 1)
    finished = subprocess.run(
        command, shell=True, cwd=REPOSITORY, env=one_process_environment(), capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    record = json.loads((tmp_path / "record.json").read_text(encoding="utf-8"))
    assert list(record["median_seconds"]) == ["1 process x 2 threads", "2 processes x 1 thread"]
    assert record["meta_gradient_difference"]["torch.float64"]["max_relative"] < 1e-12
    assert record["meta_gradient_difference"]["torch.float32"]["max_relative"] < 1e-4
