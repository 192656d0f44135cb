"""Reproducing the paper's experiments end to end: ``mamlbook reproduce`` (appendix).

Each experiment has presets: ``paper`` runs the paper's settings, ``quick`` a few
minutes' version of them for a check on a laptop. ``reproduce`` trains, evaluates on
600 new tasks and returns a JSON-ready record: the settings, the results with 95 %
intervals beside the paper's, the versions, the device and the wall time.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__
from ._checks import check_bool
from .baselines import pretrain
from .evaluation import EvaluationResult, evaluate
from .models import MLP, Conv4
from .tasks import FewShotClassification, Sinusoid, classification_accuracy
from .training import MetaTrainConfig, meta_train, resolve_device

EXPERIMENTS = ("sinusoid", "omniglot")
PRESETS = ("paper", "quick")

SINUSOID_TABLE_2 = {"MAML": (0.67, 0.38, 0.35), "pretrained": (2.41, 2.23, 2.19)}
"""The 5-shot MSE after 1, 5 and 10 steps in Finn et al. (2017), appendix C, Table 2."""

OMNIGLOT_TABLE_1 = {"MAML": (98.7, 0.4)}
"""The Omniglot 5-way 1-shot accuracy (%) and its 95 % interval in Finn et al. (2017), Table 1."""


@dataclasses.dataclass(frozen=True)
class SinusoidSettings:
    """One sinusoid run: MAML's and the pretrained baseline's training, and the test.

    Attributes:
        maml: the meta-training configuration.
        train_shots, n_query: K support and Q query points of each training task.
        pretrain_iterations: Adam steps of the pretrained baseline (T = ``maml.meta_batch_size``).
        eval_tasks, eval_shots, eval_steps: the test: new tasks, their K, and the largest
            number of fine-tuning steps (at ``maml.inner_lr``).
        report_steps: the numbers of steps that the paper's table reports.
    """

    maml: MetaTrainConfig
    train_shots: int
    n_query: int
    pretrain_iterations: int
    eval_tasks: int = 600
    eval_shots: int = 5
    eval_steps: int = 10
    report_steps: tuple[int, ...] = (1, 5, 10)


@dataclasses.dataclass(frozen=True)
class OmniglotSettings:
    """One Omniglot run: MAML on N-way K-shot episodes of the paper's split.

    Attributes:
        maml: the meta-training configuration.
        n_way, k_shot, n_query: the episodes; ``n_query`` query images per class, K in
            the paper's code for Omniglot (15 is its MiniImagenet setting).
        eval_steps: fine-tuning steps at test time (the paper: 3 for 5-way).
        eval_tasks: new tasks from the 423 test classes.
    """

    maml: MetaTrainConfig
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 1
    eval_steps: int = 3
    eval_tasks: int = 600


SETTINGS: dict[tuple[str, str], SinusoidSettings | OmniglotSettings] = {
    # The paper's setting; meta-trained with the K = 5 of the test (chapter 4, "Which K to
    # meta-train with": K = 10 training can diverge when ten steps are taken on five points).
    ("sinusoid", "paper"): SinusoidSettings(
        MetaTrainConfig.sinusoid_paper(), train_shots=5, n_query=10, pretrain_iterations=10_000
    ),
    ("sinusoid", "quick"): SinusoidSettings(
        dataclasses.replace(MetaTrainConfig.sinusoid_paper(), iterations=5_000),
        train_shots=5,
        n_query=10,
        pretrain_iterations=2_000,
    ),
    ("omniglot", "paper"): OmniglotSettings(MetaTrainConfig.omniglot_paper(5)),
    ("omniglot", "quick"): OmniglotSettings(
        dataclasses.replace(MetaTrainConfig.omniglot_paper(5), iterations=2_000, meta_batch_size=8), n_query=5
    ),
}


def reproduce(
    experiment: str,
    preset: str,
    *,
    device: str | torch.device = "auto",
    seed: int | None = None,
    progress: bool = True,
    omniglot_root: str | Path | None = None,
) -> dict[str, object]:
    """Run one experiment at one preset and return its record.

    Args:
        experiment: ``"sinusoid"`` or ``"omniglot"``.
        preset: ``"paper"`` or ``"quick"``.
        device: ``"auto"`` (CUDA where available), ``"cpu"`` or ``"cuda"``.
        seed: seeds the initialisation, the training tasks and the test tasks, an integer
            >= 0; None keeps the preset's (0).
        progress: show progress bars.
        omniglot_root: a folder holding the Omniglot zips; None downloads them (see
            ``mamlbook.data.load_omniglot``).

    Returns:
        A dict of plain values with the keys ``experiment``, ``preset``, ``settings``, ``results``,
        ``paper``, ``environment``, ``device``, ``wall_seconds``, ``started``.
    """
    if experiment not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {experiment!r}")
    check_bool("progress", progress)
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    device = resolve_device(device)
    settings = SETTINGS[experiment, preset]
    if seed is not None:
        settings = dataclasses.replace(settings, maml=dataclasses.replace(settings.maml, seed=seed))
    started = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    if experiment == "sinusoid":
        results, paper = _sinusoid(settings, device, progress)
    else:
        results, paper = _omniglot(settings, device, progress, omniglot_root)
    return {
        "experiment": experiment,
        "preset": preset,
        "settings": dataclasses.asdict(settings),
        "results": results,
        "paper": paper,
        "environment": environment(device),
        "device": str(device),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "started": started.isoformat(timespec="seconds"),
    }


def _sinusoid(
    settings: SinusoidSettings, device: torch.device, progress: bool
) -> tuple[dict[str, object], dict[str, object]]:
    """Meta-train MAML and pretrain the baseline, then fine-tune both on the same new tasks."""
    family = Sinusoid()
    config = settings.maml
    sample = functools.partial(family.sample, k_shot=settings.train_shots, n_query=settings.n_query)
    torch.manual_seed(config.seed)  # the same initialisation for both
    maml = MLP(1)
    meta_train(maml, sample, config, loss_fn=F.mse_loss, device=device, progress=progress)
    torch.manual_seed(config.seed)
    pretrained = MLP(1)
    pretrain(
        pretrained,
        sample,
        iterations=settings.pretrain_iterations,
        meta_batch_size=config.meta_batch_size,
        outer_lr=config.outer_lr,
        loss_fn=F.mse_loss,
        device=device,
        seed=config.seed,
        progress=progress,
    )
    generator = torch.Generator().manual_seed(config.seed + 1)  # test tasks unlike the training ones
    test_tasks = family.sample(settings.eval_tasks, settings.eval_shots, n_query=100, generator=generator)
    fine_tune = {"loss_fn": F.mse_loss, "inner_lr": config.inner_lr, "inner_steps": settings.eval_steps}
    results = {}
    for name, model in (("MAML", maml), ("pretrained", pretrained)):
        curves = evaluate(model, dict(model.named_parameters()), test_tasks.to(device), **fine_tune)
        results[name] = _report(curves, settings.report_steps)
    paper = {
        "source": "Finn et al. (2017), appendix C, Table 2 (5-shot MSE)",
        "steps": list(settings.report_steps),
        **{name: list(values) for name, values in SINUSOID_TABLE_2.items()},
    }
    return results, paper


def _omniglot(
    settings: OmniglotSettings, device: torch.device, progress: bool, root: str | Path | None
) -> tuple[dict[str, object], dict[str, object]]:
    """Meta-train Conv4 on the paper's split, then test on new tasks of the test classes."""
    from .data import load_omniglot, split_omniglot  # PIL and the data files only when needed

    split = split_omniglot(load_omniglot(root, download=root is None))
    shots = {"n_way": settings.n_way, "k_shot": settings.k_shot, "n_query": settings.n_query}
    train_tasks = FewShotClassification(*split.train, **shots)
    test_tasks = FewShotClassification(*split.test, **shots).sample(
        settings.eval_tasks, generator=torch.Generator().manual_seed(settings.maml.seed + 1)
    )
    torch.manual_seed(settings.maml.seed)
    model = Conv4(n_way=settings.n_way)
    history = meta_train(
        model, train_tasks.sample, settings.maml, loss_fn=F.cross_entropy, device=device, progress=progress
    )
    result = evaluate(
        model,
        dict(model.named_parameters()),
        test_tasks.to(device),
        loss_fn=F.cross_entropy,
        inner_lr=history.inner_lr,
        inner_steps=settings.eval_steps,
        metric=classification_accuracy,
        chunk_size=100,
    )
    results = {
        "MAML": {
            "episodes": f"{settings.n_way}-way {settings.k_shot}-shot",
            "steps": settings.eval_steps,
            "accuracy_percent": round(100 * float(result.mean[-1]), 2),
            "ci95_percent": round(100 * float(result.ci95[-1]), 2),
            "accuracy_percent_by_steps": [round(100 * float(value), 2) for value in result.mean],
            "training_seconds": round(history.seconds, 1),
        }
    }
    paper = {
        "source": "Finn et al. (2017), Table 1 (Omniglot, 5-way 1-shot, %)",
        "MAML": list(OMNIGLOT_TABLE_1["MAML"]),
    }
    return results, paper


def _report(result: EvaluationResult, steps: tuple[int, ...]) -> dict[str, object]:
    """The mean and 95 % interval after each of ``steps`` steps, rounded for the record.

    A test task whose loss became NaN or infinite within the evaluated steps makes the
    means it enters NaN or infinite; the record then also counts those tasks and gives
    the mean and interval of the other tasks, so that the reader sees both.
    """

    def rounded(values: torch.Tensor) -> list[float]:
        return [round(float(values[step]), 4) for step in steps]

    diverged = ~torch.isfinite(result.per_task).all(dim=1)  # (T,)
    report: dict[str, object] = {
        "steps": list(steps),
        "mean": rounded(result.mean),
        "ci95": rounded(result.ci95),
        "tasks": len(diverged),
        "diverged_tasks": int(diverged.sum()),
    }
    kept = result.per_task[~diverged]  # (T - diverged, n + 1)
    if diverged.any() and len(kept) > 1:
        others = EvaluationResult.of(kept)
        report["mean_without_diverged"] = rounded(others.mean)
        report["ci95_without_diverged"] = rounded(others.ci95)
    return report


def environment(device: torch.device) -> dict[str, object]:
    """The versions and the machine behind a record."""
    return {
        "mamlbook": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def format_record(record: dict[str, object]) -> str:
    """A few lines comparing a record's results with the paper's."""
    where = f"on {record['device']}: {record['wall_seconds']} s"
    lines = [f"{record['experiment']} ({record['preset']} preset) {where}"]
    paper, results = record["paper"], record["results"]
    if record["experiment"] == "sinusoid":
        lines.append(
            "5-shot MSE after " + " / ".join(map(str, paper["steps"])) + " steps, ours against the paper's:"
        )
        for name, result in results.items():
            theirs = " / ".join(f"{value:.2f}" for value in paper[name])
            lines.append(f"  {name:<11} {_intervals(result['mean'], result['ci95'])}   (paper {theirs})")
            diverged = result.get("diverged_tasks", 0)
            if diverged:
                lines.append(f"  {'':<11} {diverged} of {result['tasks']} test tasks diverged")
                if "mean_without_diverged" in result:
                    intervals = _intervals(result["mean_without_diverged"], result["ci95_without_diverged"])
                    lines.append(f"  {'':<11} the other {result['tasks'] - diverged}: {intervals}")
    else:
        result = results["MAML"]
        lines.append(
            f"  MAML {result['episodes']}, {result['steps']} steps: {result['accuracy_percent']:.1f} ± "
            f"{result['ci95_percent']:.1f} %   (paper {paper['MAML'][0]} ± {paper['MAML'][1]} %)"
        )
    return "\n".join(lines)


def _intervals(means: list[float], ci95s: list[float]) -> str:
    """``mean ± ci95`` for each step, joined by slashes."""
    return " / ".join(_interval(mean, ci) for mean, ci in zip(means, ci95s, strict=True))


def _interval(mean: float, ci95: float) -> str:
    """``mean ± ci95`` with two decimals, or three significant digits where a task has blown
    the mean up past 1e4."""
    spec = ".2f" if abs(mean) < 1e4 else ".3g"
    return f"{mean:{spec}} ± {ci95:{spec}}"
