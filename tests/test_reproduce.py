"""``mamlbook reproduce``: the presets, the record it writes and its errors, on tiny settings."""

from __future__ import annotations

import dataclasses
import json
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


def test_diverged_test_tasks_are_counted_and_the_others_reported_beside_them():
    per_task = torch.tensor([[2.0, 1.0, 0.5], [4.0, 3.0, 1.5], [2.0, 50.0, float("nan")]])  # (T, 3)
    result = EvaluationResult(per_task, per_task.mean(dim=0), 1.96 * per_task.std(dim=0) / 3**0.5)
    report = reproduce._report(result, (1, 2))
    assert (report["tasks"], report["diverged_tasks"]) == (3, 1)
    assert report["mean"][0] == round((1.0 + 3.0 + 50.0) / 3, 4) and report["mean"][1] != report["mean"][1]
    assert report["mean_without_diverged"] == [2.0, 1.0]
    assert report["ci95_without_diverged"] == [1.96, 0.98]  # standard deviations 2 ** 0.5 and 0.5 ** 0.5
    record = {
        "experiment": "sinusoid",
        "preset": "paper",
        "device": "cpu",
        "wall_seconds": 1.0,
        "paper": {"steps": [1, 2], "MAML": [0.5, 0.4]},
        "results": {"MAML": report},
    }
    lines = reproduce.format_record(record).splitlines()
    assert "1 of 3 test tasks diverged" in lines[-2]
    assert lines[-1].strip() == "the other 2: 2.00 ± 1.96 / 1.00 ± 0.98"


def test_a_blown_up_mean_is_printed_in_scientific_notation():
    assert reproduce._intervals([0.55, 4.7088e11, float("nan")], [0.05, 9.2293e11, float("nan")]) == (
        "0.55 ± 0.05 / 4.71e+11 ± 9.23e+11 / nan ± nan"
    )


def test_a_run_without_diverged_tasks_reports_no_second_mean():
    per_task = torch.tensor([[2.0, 1.0], [4.0, 3.0]])
    report = reproduce._report(EvaluationResult(per_task, per_task.mean(0), per_task.std(0)), (1,))
    assert report["diverged_tasks"] == 0 and "mean_without_diverged" not in report


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
