"""The scripts of ``benchmarks/`` run in-process on tiny settings: their records and their checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import backends  # noqa: E402  (benchmarks/backends.py)
import meta_iteration  # noqa: E402  (benchmarks/meta_iteration.py)
import outer_step  # noqa: E402  (benchmarks/outer_step.py)
import query_floor  # noqa: E402  (benchmarks/query_floor.py)


def run(tmp_path: Path, *arguments: str) -> dict:
    """Run the benchmark with a few rounds and return its JSON record."""
    record = tmp_path / "record.json"
    status = meta_iteration.main([*arguments, "--repeats", "2", "--warmup", "0", "--json", str(record)])
    assert status == 0
    return json.loads(record.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("setting", "tasks"), [("sinusoid", "3"), ("omniglot", "1")])
def test_record_holds_every_method_with_times_memory_and_ratios(tmp_path, setting, tasks):
    record = run(tmp_path, "--setting", setting, "--meta-batch-size", tasks, "--memory")
    assert record["settings"]["problem"] == setting
    assert record["settings"]["meta_batch_size"] == int(tasks)
    assert list(record["methods"]) == ["maml_loss", "loop", "plain"]
    for method in record["methods"].values():
        assert len(method["times_ms"]) == 2
        assert method["min_ms"] <= method["median_ms"] <= method["max_ms"]
        assert method["memory"]["saved_bytes"] > 0
    assert set(record["ratios"]) == {"loop_over_maml_loss", "maml_loss_over_plain"}
    assert max(record["meta_gradient_max_abs_diff"].values()) < meta_iteration.GRADIENT_TOLERANCE


@pytest.mark.slow
def test_saved_memory_grows_with_inner_steps(tmp_path):
    one, three = (run(tmp_path, "--meta-batch-size", "2", "--inner-steps", s, "--memory") for s in "13")
    for method in ("maml_loss", "loop"):
        assert (
            three["methods"][method]["memory"]["saved_bytes"]
            > one["methods"][method]["memory"]["saved_bytes"]
        )


def test_a_wrong_meta_gradient_stops_the_run_before_timing(tmp_path, monkeypatch, capsys):
    reference = meta_iteration.loop_meta_loss
    monkeypatch.setattr(
        meta_iteration, "loop_meta_loss", lambda *args, **kwargs: 1.01 * reference(*args, **kwargs)
    )
    with pytest.raises(SystemExit, match="differ from the per-task loop"):
        meta_iteration.main(["--meta-batch-size", "2", "--repeats", "1", "--json", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_methods_timed_in_processes_of_their_own(tmp_path, capsys):
    record = run(tmp_path, "--meta-batch-size", "2", "--processes", "2", "--no-plain", "--memory")
    assert record["settings"]["processes"] == 2
    for method in record["methods"].values():
        assert len(method["times_ms"]) == 2  # one median per process
        assert method["memory"]["saved_bytes"] > 0
    printed = capsys.readouterr().out
    assert "2 processes per method, each 0 warm-up + 2 timed iterations" in printed
    assert printed.count("process 2/2 of ") == 2


def test_without_options_keeps_what_a_timing_process_needs():
    argv = ["--setting", "omniglot", "--json", "r.json", "--processes=3", "--memory", "--peers"]
    argv += ["--threads", "2"]
    kept = meta_iteration._without_options(argv, ("--json", "--processes"))
    assert kept == ["--setting", "omniglot", "--peers", "--threads", "2"]


def test_query_floor_prints_maml_loss_and_each_plain_query_pass(capsys):
    argv = ["--meta-batch-size", "2", "--repeats", "2", "--warmup", "0", "--batch-sizes", "75", "150"]
    assert query_floor.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "over its 150 query images" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["maml_loss", "query/75", "query/150"]
    assert all("ms median" in line for line in lines[1:])


@pytest.mark.parametrize("setting, tensors", [("sinusoid", 6), ("omniglot", 14)])
def test_outer_step_times_both_optimisers_and_finds_them_equal(capsys, setting, tensors):
    assert outer_step.main(["--setting", setting, "--repeats", "3", "--warmup", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"{setting} ({tensors} tensors" in lines[0]
    assert [line.split()[0] for line in lines[1:3]] == ["torch.optim.Adam", "OuterAdam"]
    assert lines[-1] == "parameters after 4 steps equal to the last bit: True"


def test_backends_script_checks_each_backend_then_times_it(capsys):
    assert backends.main(["--setting", "sinusoid", "--repeats", "1"]) == 0
    output = capsys.readouterr().out
    for name in ("autograd", "loop", "batched", "closed_form"):
        assert f"{name:>12}: meta-gradient differs from the loop's by" in output
    assert 'backend="auto" takes closed_form' in output


def test_backends_script_leaves_out_the_backends_that_refuse_conv4():
    model, batch, loss_fn, inner_lr = backends.setting("omniglot", torch.float32, num_tasks=2)
    accepted = backends.accepting(model, dict(model.named_parameters()), batch, loss_fn, inner_lr)
    assert accepted == ["autograd", "loop", "batched"]
