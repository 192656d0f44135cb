"""``mamlbook reproduce``: the presets, the record it writes and its errors, on tiny settings."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import pytest
import torch

import mamlbook._files
from mamlbook import cli, reproduce
from mamlbook.evaluation import EvaluationResult
from mamlbook.training import MetaTrainConfig

OMNIGLOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


def test_the_paper_presets_hold_the_papers_settings():
    sinusoid = reproduce.SETTINGS["sinusoid", "paper"]
    assert sinusoid.maml == MetaTrainConfig.sinusoid_paper()
    assert (sinusoid.eval_tasks, sinusoid.eval_shots, sinusoid.report_steps) == (600, 5, (1, 5, 10))
    omniglot = reproduce.SETTINGS["omniglot", "paper"]
    assert omniglot.maml == MetaTrainConfig.omniglot_paper(5)
    assert (omniglot.maml.iterations, omniglot.maml.meta_batch_size, omniglot.maml.inner_lr) == (
        60_000,
        32,
        0.4,
    )
    assert (omniglot.n_way, omniglot.k_shot, omniglot.n_query, omniglot.eval_steps) == (5, 1, 1, 3)


@pytest.fixture
def tiny_presets(monkeypatch):
    tiny = dataclasses.replace(MetaTrainConfig.sinusoid_paper(), iterations=5, meta_batch_size=4)
    settings = dict(reproduce.SETTINGS)
    settings["sinusoid", "quick"] = reproduce.SinusoidSettings(
        tiny, train_shots=5, n_query=5, pretrain_iterations=5, eval_tasks=20
    )
    settings["omniglot", "quick"] = reproduce.OmniglotSettings(
        dataclasses.replace(MetaTrainConfig.omniglot_paper(5), iterations=2, meta_batch_size=2),
        n_query=2,
        eval_steps=2,
        eval_tasks=10,
    )
    monkeypatch.setattr(reproduce, "SETTINGS", settings)


def test_sinusoid_record_is_written_with_results_beside_the_paper(tiny_presets, tmp_path, capsys):
    out = tmp_path / "sinusoid.json"
    assert (
        cli.main(
            [
                "reproduce",
                "sinusoid",
                "--preset",
                "quick",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    record = json.loads(out.read_text())
    assert (record["experiment"], record["preset"], record["device"]) == ("sinusoid", "quick", "cpu")
    assert record["settings"]["maml"]["iterations"] == 5
    for name in ("MAML", "pretrained"):
        result = record["results"][name]
        assert result["steps"] == [1, 5, 10] and len(result["mean"]) == len(result["ci95"]) == 3
        assert all(ci >= 0 for ci in result["ci95"])
    assert record["paper"]["MAML"] == [0.67, 0.38, 0.35]
    assert record["environment"]["torch"] and record["wall_seconds"] >= 0
    printed = capsys.readouterr().out
    assert "paper 0.67 / 0.38 / 0.35" in printed and str(out) in printed
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left


@pytest.mark.slow
@pytest.mark.skipif(not OMNIGLOT.is_dir(), reason="the local Omniglot copy ../shared/data/omniglot is absent")
def test_omniglot_record_reports_accuracy_in_percent(tiny_presets, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    record = reproduce.reproduce("omniglot", "quick", device="cpu", progress=False, omniglot_root=OMNIGLOT)
    result = record["results"]["MAML"]
    assert result["episodes"] == "5-way 1-shot" and result["steps"] == 2
    assert len(result["accuracy_percent_by_steps"]) == 3
    assert 0 <= result["accuracy_percent"] <= 100 and result["ci95_percent"] >= 0
    assert "paper 98.7 ± 0.4 %" in reproduce.format_record(record)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reproduce", "mnist"], "invalid choice"),
        (["reproduce", "sinusoid", "--preset", "full"], "invalid choice"),
        (["reproduce", "sinusoid", "--device", "tpu"], "invalid choice"),
        (["reproduce", "sinusoid", "--seed", "-1"], "argument --seed: expected an integer >= 0 and at most"),
        (["reproduce", "sinusoid", "--seed", "one"], "expected an integer >= 0, got 'one'"),
        (
            ["reproduce", "sinusoid", "--inner-steps", "0"],
            "argument --inner-steps: expected an integer >= 1, got 0",
        ),
        (["reproduce", "sinusoid", "--multi-step-loss-iterations", "-1"], "expected an integer >= 0, got -1"),
        (["reproduce", "sinusoid", "--inner-steps", "two"], "expected an integer >= 1, got 'two'"),
    ],
)
def test_bad_command_lines_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_an_out_file_in_a_missing_folder_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "missing" / "record.json"
    assert cli.main(["reproduce", "sinusoid", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_reproduce_names_a_bad_experiment_or_preset():
    with pytest.raises(ValueError, match="experiment must be one of"):
        reproduce.reproduce("mnist", "quick")
    with pytest.raises(ValueError, match="preset must be one of"):
        reproduce.reproduce("sinusoid", "full")


def test_a_seed_changes_the_run_and_is_recorded(tiny_presets, tmp_path):
    records = []
    for seed in (None, 3):
        out = tmp_path / f"seed_{seed}.json"
        argv = ["reproduce", "sinusoid", "--device", "cpu", "--out", str(out), "--no-progress"]
        assert cli.main(argv + ([] if seed is None else ["--seed", str(seed)])) == 0
        records.append(json.loads(out.read_text()))
    default, seeded = records
    assert (default["settings"]["maml"]["seed"], seeded["settings"]["maml"]["seed"]) == (0, 3)
    assert default["results"]["MAML"]["mean"] != seeded["results"]["MAML"]["mean"]
    with pytest.raises(ValueError, match="seed must be"):
        reproduce.reproduce("sinusoid", "quick", device="cpu", seed=-1)


def test_a_task_worse_than_before_any_step_or_not_finite_counts_as_diverged():
    per_task = torch.tensor(
        [[2.0, 1.0, 0.5], [4.0, 3.0, 5.0], [2.0, 50.0, float("nan")], [3.0, 1.0, 1.0]]
    )  # (T, 3): the second task ends worse than it began, the third blows up
    result = EvaluationResult.of(per_task)
    report = reproduce._report(result, (1, 2))
    assert report["tasks"] == 4 and report["diverged_tasks"] == [1, 2]
    assert report["mean"][0] == round((1.0 + 3.0 + 50.0 + 1.0) / 4, 4) and math.isnan(report["mean"][1])
    assert report["mean_without_diverged"] == [round(5.0 / 3, 4), 0.75]
    assert report["ci95_without_diverged"][1] == round(1.96 * 0.125**0.5 / 2**0.5, 4)  # tasks 0 and 3
    assert report["median"] == [2.0, 3.0]  # the NaN counts as the largest error


def test_the_record_prints_every_mean_beside_the_paper():
    per_task = torch.tensor([[2.0, 1.0, 0.5], [4.0, 3.0, 1.5], [2.0, 50.0, float("nan")]])
    report = reproduce._report(EvaluationResult.of(per_task), (1, 2))
    record = {
        "experiment": "sinusoid",
        "preset": "paper",
        "device": "cpu",
        "wall_seconds": 1.0,
        "paper": {"steps": [1, 2], "MAML": [0.5, 0.4]},
        "results": {"MAML": report},
    }
    lines = [line.strip() for line in reproduce.format_record(record).splitlines()]
    assert lines[2] == "MAML   (paper 0.50 / 0.40)"
    assert lines[3].startswith("all 3 tasks") and lines[3].endswith("nan ± nan")
    assert lines[4] == "diverged tasks     1 / 1"
    assert lines[5] == "the others         2.00 ± 1.96 / 1.00 ± 0.98"
    assert lines[6] == "median, all tasks  3.00 / 1.50"


def test_a_blown_up_mean_is_printed_in_scientific_notation():
    assert reproduce._intervals([0.55, 4.7088e11, float("nan")], [0.05, 9.2293e11, float("nan")]) == (
        "0.55 ± 0.05 / 4.71e+11 ± 9.23e+11 / nan ± nan"
    )


@pytest.mark.parametrize("degrees, quantile", [(1, 12.7062), (4, 2.7764), (9, 2.2622), (1000, 1.9623)])
def test_students_t_quantile_matches_the_tables(degrees, quantile):
    assert reproduce._t_quantile(0.975, degrees) == pytest.approx(quantile, abs=1e-4)


def sine_record(seed: int, means: list[float], diverged: list[int]) -> dict[str, object]:
    """A sine-wave record with only what ``across_seeds`` reads."""
    settings = dataclasses.asdict(reproduce.SETTINGS["sinusoid", "paper"])
    settings["maml"]["seed"] = seed
    result = {"tasks": 600, "mean_without_diverged": means, "diverged_tasks": diverged}
    paper = {"steps": [1, 5, 10], "MAML": [0.67, 0.38, 0.35]}
    return {"experiment": "sinusoid", "settings": settings, "paper": paper, "results": {"MAML": result}}


def test_the_verdict_across_seeds_is_the_mean_of_the_seeds_means_with_a_t_interval():
    records = [
        sine_record(0, [0.5, 0.3, 0.2], [0, 1, 3]),
        sine_record(1, [0.6, 0.4, 0.3], [0, 0, 0]),
        sine_record(2, [0.7, 0.5, 0.7], [0, 0, 2]),
    ]
    summary = reproduce.across_seeds(records)
    assert summary["seeds"] == [0, 1, 2] and summary["tasks_per_seed"] == 600
    first, fifth, tenth = summary["steps"]
    half_width = 4.3027 * 0.1 / 3**0.5  # t(0.975, 2 degrees) * standard deviation / sqrt(seeds)
    assert first["mean"] == 0.6 and first["ci95"] == pytest.approx(half_width, abs=1e-4)
    assert (first["paper_is"], fifth["paper_is"]) == ("within", "within")
    assert (fifth["seeds_with_diverged_tasks"], fifth["diverged_tasks"]) == (1, 1)
    assert (tenth["seeds_with_diverged_tasks"], tenth["diverged_tasks"]) == (2, 5)
    below = reproduce.across_seeds([sine_record(seed, [0.1, 0.1, 0.1], [0, 0, 0]) for seed in (3, 4)])
    assert [step["paper_is"] for step in below["steps"]] == ["above"] * 3  # a zero-width interval below
    above = reproduce.across_seeds([sine_record(seed, [0.9, 0.9, 0.9], [0, 0, 0]) for seed in (3, 4)])
    assert [step["paper_is"] for step in above["steps"]] == ["below"] * 3
    lines = reproduce.format_across_seeds(summary).splitlines()
    assert lines[0] == "MAML over 3 seeds (0, 1, 2), 600 test tasks each:"
    assert lines[4].split()[-2:] == ["2", "5"]


def test_the_verdict_across_seeds_refuses_records_that_do_not_belong_together():
    one = sine_record(0, [0.5, 0.3, 0.2], [0, 0, 0])
    with pytest.raises(ValueError, match="at least two"):
        reproduce.across_seeds([one])
    with pytest.raises(ValueError, match="different seeds"):
        reproduce.across_seeds([one, one])
    other = sine_record(1, [0.5, 0.3, 0.2], [0, 0, 0])
    other["settings"]["maml"]["inner_steps"] = 5
    with pytest.raises(ValueError, match="share their settings"):
        reproduce.across_seeds([one, other])
    with pytest.raises(ValueError, match="sine-wave"):
        reproduce.across_seeds([one, {**other, "experiment": "omniglot"}])


def test_inner_steps_of_meta_training_can_be_set_and_are_recorded(tiny_presets, tmp_path):
    out = tmp_path / "inner.json"
    argv = [
        "reproduce",
        "sinusoid",
        "--device",
        "cpu",
        "--inner-steps",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli.main([*argv, "--multi-step-loss-iterations", "3"]) == 0
    record = json.loads(out.read_text())
    assert record["settings"]["maml"]["inner_steps"] == 2 and record["settings"]["eval_steps"] == 10
    assert record["settings"]["maml"]["multi_step_loss_iterations"] == 3
    with pytest.raises(ValueError, match="inner_steps must be >= 1"):
        reproduce.reproduce("sinusoid", "quick", device="cpu", inner_steps=0)
    with pytest.raises(TypeError, match="multi_step_loss_iterations must be an integer"):
        reproduce.reproduce("sinusoid", "quick", device="cpu", multi_step_loss_iterations=1.5)


def test_an_out_path_that_is_a_folder_is_refused_before_training(tmp_path, capsys):
    assert cli.main(["reproduce", "sinusoid", "--out", str(tmp_path)]) == 2
    assert "--out: " in (err := capsys.readouterr().err) and "is a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_an_out_path_in_a_read_only_folder_is_refused_before_training(tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    assert cli.main(["reproduce", "sinusoid", "--out", str(folder / "record.json")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_a_seed_beyond_torchs_range_names_the_seed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["reproduce", "sinusoid", "--seed", str(2**64)])
    assert exit_info.value.code == 2 and "--seed" in (err := capsys.readouterr().err) and "at most" in err
    with pytest.raises(ValueError, match="seed must be at most"):
        reproduce.reproduce("sinusoid", "quick", device="cpu", seed=2**63)


def test_omniglot_that_cannot_be_downloaded_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    def no_network(url, timeout):
        raise OSError("network is unreachable")

    monkeypatch.setattr(mamlbook._files, "open_url", no_network)
    monkeypatch.setenv("MAMLBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MAMLBOOK_CACHE", str(tmp_path / "cache"))
    assert cli.main(["reproduce", "omniglot", "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mamlbook: could not download") and err.count("\n") == 1


def test_an_out_file_that_is_read_only_or_a_link_is_refused_before_training(tmp_path, capsys):
    read_only = tmp_path / "record.json"
    read_only.write_text("{}")
    read_only.chmod(0o444)
    assert cli.main(["reproduce", "sinusoid", "--out", str(read_only)]) == 2
    assert "exists and is read-only" in capsys.readouterr().err
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    assert cli.main(["reproduce", "sinusoid", "--out", str(link)]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
