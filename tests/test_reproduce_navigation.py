"""``mamlbook reproduce navigation``: the presets, the record on a tiny run, the command line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mamlbook import cli, reproduce
from mamlbook.rl import NavigationConfig

TINY = reproduce.NavigationSettings(
    NavigationConfig(iterations=2, meta_batch_size=2, num_trajectories=2, horizon=5),
    eval_goals=3,
    eval_trajectories=2,
)


def test_the_presets_hold_the_papers_settings():
    paper = reproduce.SETTINGS["navigation", "paper"]
    assert paper.maml == NavigationConfig.paper() and paper.maml.outer == "trpo"
    assert (paper.maml.meta_batch_size, paper.maml.num_trajectories, paper.maml.horizon) == (20, 20, 100)
    assert (paper.maml.inner_lr, paper.maml.max_kl) == (0.1, 0.01)
    assert (paper.eval_goals, paper.eval_steps, paper.eval_trajectories) == (40, 3, 40)
    quick = reproduce.SETTINGS["navigation", "quick"]
    assert quick.maml == NavigationConfig() and quick.maml.outer == "adam"


@pytest.mark.parametrize("outer", ["adam", "trpo"])
def test_a_tiny_run_writes_a_record_beside_the_papers_table(outer):
    settings = dataclasses.replace(TINY, maml=dataclasses.replace(TINY.maml, outer=outer))
    record = reproduce.reproduce(
        "navigation", "quick", device="cpu", progress=False, settings=settings, seed=2
    )
    record = json.loads(json.dumps(record))  # plain values only
    assert (record["experiment"], record["preset"], record["device"]) == ("navigation", "quick", "cpu")
    assert record["settings"]["seed"] == 2 and record["settings"]["maml"]["outer"] == outer
    results = record["results"]
    assert set(results) == {"MAML", "pretrained", "random", "oracle"}
    for name in ("MAML", "pretrained", "random"):
        result = results[name]
        assert result["steps"] == [0, 1, 2, 3] and result["goals"] == 3
        assert len(result["mean"]) == len(result["ci95"]) == 4
        assert all(mean < 0 for mean in result["mean"]) and all(ci >= 0 for ci in result["ci95"])
    assert "training_seconds" in results["MAML"] and "training_seconds" not in results["random"]
    assert results["oracle"]["what"].startswith("straight to the goal")
    assert results["oracle"]["steps"] == [0] and results["oracle"]["mean"][0] > max(results["random"]["mean"])
    assert record["paper"]["MAML"] == [-40.41, -11.68, -3.33, -3.23]
    assert record["paper"]["oracle"] == [-2.29] and record["paper"]["steps"] == [0, 1, 2, 3]
    assert record["environment"]["torch"] and record["wall_seconds"] >= 0
    lines = reproduce.format_record(record).splitlines()
    assert lines[1].startswith("average return after 0 / 1 / 2 / 3 policy-gradient steps on 3 new goals")
    assert lines[2].startswith("  MAML ") and lines[2].endswith("(paper -40.41 / -11.68 / -3.33 / -3.23)")
    assert lines[5].startswith("  oracle ") and lines[5].endswith("(paper -2.29)")


def test_the_same_seed_gives_the_same_record():
    runs = [
        reproduce.reproduce("navigation", "quick", device="cpu", progress=False, settings=TINY)["results"]
        for _ in range(2)
    ]
    for result in runs:
        for name in result:
            result[name].pop("training_seconds", None)
    assert runs[0] == runs[1]


def test_the_command_line_parses_the_preset_and_refuses_bad_values(capsys):
    args = cli.parse_args(["reproduce", "navigation", "--preset", "paper", "--seed", "3", "--device", "cpu"])
    assert (args.experiment, args.preset, args.seed, args.device) == ("navigation", "paper", 3, "cpu")
    assert cli.parse_args(["reproduce", "navigation"]).preset == "quick"
    for argv in (["--preset", "full"], ["--device", "tpu"], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["reproduce", "navigation", *argv])
        assert exit_info.value.code == 2 and "argument --" in capsys.readouterr().err
    assert cli.main(["reproduce", "navigation", "--device", "cpu", "--multi-step-loss-iterations", "2"]) == 1
    assert "not navigation" in capsys.readouterr().err


def test_settings_of_another_experiment_are_refused():
    with pytest.raises(TypeError, match="settings of navigation must be a NavigationSettings"):
        reproduce.reproduce(
            "navigation", "quick", device="cpu", settings=reproduce.SETTINGS["sinusoid", "quick"]
        )
    with pytest.raises(ValueError, match="eval_goals must be >= 1"):
        dataclasses.replace(TINY, eval_goals=0)
