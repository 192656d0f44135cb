"""The scripts of ``examples/`` run to the end with a few iterations and print their results."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str) -> str:
    """The standard output of ``python examples/<name> *args``, which must exit with 0."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def number_after(label: str, output: str) -> float:
    match = re.search(rf"^{re.escape(label)}\s*(-?\d+\.\d+)", output, flags=re.MULTILINE)
    assert match, f"no line starting {label!r} in:\n{output}"
    return float(match.group(1))


@pytest.mark.slow
def test_custom_model_example_trains_and_evaluates_a_residual_network():
    output = run_example("custom_model.py", "--iterations", "5")

    assert number_after("meta-loss, mean of the first 1 iterations:", output) > 0
    assert "meta-trained model" in output and "untrained model" in output
    assert len(re.findall(r"^after 10 steps: \d+\.\d+ ± \d+\.\d+$", output, flags=re.MULTILINE)) == 2


@pytest.mark.slow
def test_custom_loss_example_prints_the_meta_loss_and_the_cost_adaptation_lowers():
    output = run_example("custom_loss.py", "--iterations", "4")

    assert len(re.findall(r"^iteration +\d+: meta-loss \d+\.\d+$", output, flags=re.MULTILINE)) == 4
    before = number_after("cost on 200 new goals before adapting:", output)
    after = number_after("cost on 200 new goals after 2 steps:", output)
    assert number_after("the least possible cost:", output) < after < before
