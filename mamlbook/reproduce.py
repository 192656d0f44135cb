"""Reproducing the paper's experiments end to end: ``mamlbook reproduce`` (appendix).

Each experiment has presets: ``paper`` runs the paper's settings, ``quick`` a few
minutes' version of them for a check on a laptop. ``reproduce`` trains, evaluates on
new tasks (600, or 40 goals for 2-D navigation) and returns a JSON-ready record: the
settings, the results with 95 % intervals beside the paper's, the versions, the device
and the wall time.

One run is one seed. ``across_seeds`` takes the sine-wave records of several seeds and
gives the reproduction verdict: the mean over seeds of each seed's mean over the test
tasks that did not diverge, with its 95 % interval across seeds, against the paper's
value, and how many seeds and tasks diverged.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import __version__
from ._checks import check_bool, check_int, check_seed
from .baselines import pretrain
from .distributed import launch_world_size
from .evaluation import EvaluationResult, evaluate
from .models import MLP, Conv4
from .rl.meta import NavigationConfig
from .tasks import FewShotClassification, Sinusoid, classification_accuracy
from .training import MetaTrainConfig, meta_train, resolve_device

EXPERIMENTS = ("sinusoid", "omniglot", "navigation")
PRESETS = ("paper", "quick")

SINUSOID_TABLE_2 = {"MAML": (0.67, 0.38, 0.35), "pretrained": (2.41, 2.23, 2.19)}
"""The 5-shot MSE after 1, 5 and 10 steps in Finn et al. (2017), appendix C, Table 2."""

OMNIGLOT_TABLE_1 = {"MAML": (98.7, 0.4)}
"""The Omniglot 5-way 1-shot accuracy (%) and its 95 % interval in Finn et al. (2017), Table 1."""

NAVIGATION_TABLE_4 = {
    "MAML": (-40.41, -11.68, -3.33, -3.23),
    "pretrained": (-40.81, -19.73, -11.72, -8.47),
    "random": (-82.66, -57.96, -53.84, -46.81),
    "oracle": (-2.29,),
}
"""The average return on 2-D navigation after 0, 1, 2 and 3 policy-gradient steps in Finn et
al. (2017), appendix, Table 4; the oracle (a policy given the goal) takes none."""


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


@dataclasses.dataclass(frozen=True)
class NavigationSettings:
    """One 2-D navigation run: MAML's and the pretrained policy's training, and the test.

    Attributes:
        maml: the meta-training configuration; the pretrained policy trains with the same
            and ``inner_steps=0`` (one policy for all goals).
        seed: seeds the initial policy (the same for MAML, pretrained and random), the
            training goals and episodes; ``seed + 1`` the test's goals and episodes.
        eval_goals: new goals of the test (the paper: 40).
        eval_steps: policy-gradient steps at test, the first at ``maml.inner_lr``, the
            later ones at half of it (the paper: 3).
        eval_trajectories: episodes per goal for each step and for the returns (the paper: 40).
    """

    maml: NavigationConfig
    seed: int = 0
    eval_goals: int = 40
    eval_steps: int = 3
    eval_trajectories: int = 40

    def __post_init__(self) -> None:
        if not isinstance(self.maml, NavigationConfig):
            raise TypeError(f"maml must be a NavigationConfig, got {type(self.maml).__name__}")
        check_seed("seed", self.seed)
        check_int("eval_goals", self.eval_goals, minimum=1)
        check_int("eval_steps", self.eval_steps, minimum=0)
        check_int("eval_trajectories", self.eval_trajectories, minimum=1)


Settings = SinusoidSettings | OmniglotSettings | NavigationSettings
"""The settings of one run of one of the experiments."""

SETTINGS: dict[tuple[str, str], Settings] = {
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
    # The paper's TRPO at KL 0.01 for 100 iterations; quick: Adam at chapter 8's defaults.
    ("navigation", "paper"): NavigationSettings(NavigationConfig.paper()),
    ("navigation", "quick"): NavigationSettings(NavigationConfig()),
}


def reproduce(
    experiment: str,
    preset: str,
    *,
    device: str | torch.device = "auto",
    seed: int | None = None,
    inner_steps: int | None = None,
    multi_step_loss_iterations: int | None = None,
    progress: bool = True,
    omniglot_root: str | Path | None = None,
    settings: Settings | None = None,
) -> dict[str, object]:
    """Run one experiment at one preset and return its record.

    Args:
        experiment: ``"sinusoid"``, ``"omniglot"`` or ``"navigation"``.
        preset: ``"paper"`` or ``"quick"``.
        device: ``"auto"`` (CUDA where available), ``"cpu"`` or ``"cuda"``.
        seed: seeds the initialisation, the training tasks and the test tasks, an integer
            >= 0; None keeps the preset's (0).
        inner_steps: the inner steps of meta-training, > 0; None keeps the preset's (1 for
            sine waves and navigation). The test's fine-tuning steps stay the preset's.
        multi_step_loss_iterations: MAML++'s multi-step loss for that many first
            meta-iterations (``MetaTrainConfig.multi_step_loss_iterations``), >= 0; None
            keeps the preset's (0: the last step's query loss alone). Not for navigation.
        progress: show progress bars.
        omniglot_root: a folder holding the Omniglot zips; None downloads them (see
            ``mamlbook.data.load_omniglot``).
        settings: run these instead of the preset's (a smaller run, for a test), of the
            experiment's settings class; the record keeps the preset's name beside them.

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
    preset_settings = SETTINGS[experiment, preset]
    if settings is None:
        settings = preset_settings
    elif type(settings) is not type(preset_settings):
        raise TypeError(
            f"settings of {experiment} must be a {type(preset_settings).__name__}, "
            f"got {type(settings).__name__}"
        )
    changes = {} if seed is None else {"seed": seed}
    if inner_steps is not None:
        changes["inner_steps"] = check_int("inner_steps", inner_steps, minimum=1)
    if multi_step_loss_iterations is not None:
        if experiment == "navigation":
            raise ValueError("multi_step_loss_iterations applies to sinusoid and omniglot, not navigation")
        changes["multi_step_loss_iterations"] = check_int(
            "multi_step_loss_iterations", multi_step_loss_iterations, minimum=0
        )
    if experiment == "navigation":  # the seed is the run's, not the meta-training configuration's
        settings = dataclasses.replace(settings, seed=changes.pop("seed", settings.seed))
    settings = dataclasses.replace(settings, maml=dataclasses.replace(settings.maml, **changes))
    started = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    if experiment == "sinusoid":
        results, paper = _sinusoid(settings, device, progress)
    elif experiment == "omniglot":
        results, paper = _omniglot(settings, device, progress, omniglot_root)
    else:
        results, paper = _navigation(settings, device, progress)
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


def _navigation(
    settings: NavigationSettings, device: torch.device, progress: bool
) -> tuple[dict[str, object], dict[str, object]]:
    """Meta-train MAML and train the pretrained policy, then adapt both and a random policy to new goals."""
    from .rl import (
        GaussianMLPPolicy,
        evaluate_navigation,
        meta_train_navigation,
        oracle_returns,
        sample_goals,
    )

    def initial_policy() -> GaussianMLPPolicy:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            return GaussianMLPPolicy().to(device)

    policies, seconds = {}, {}
    for name, config in (
        ("MAML", settings.maml),
        ("pretrained", dataclasses.replace(settings.maml, inner_steps=0)),
    ):
        policies[name] = initial_policy()
        generator = torch.Generator().manual_seed(settings.seed)  # the same first goals for both
        history = meta_train_navigation(policies[name], config, generator=generator, progress=progress)
        seconds[name] = round(history.seconds, 1)
    policies["random"] = initial_policy()
    goals = sample_goals(settings.eval_goals, generator=torch.Generator().manual_seed(settings.seed + 1))
    test = {
        "inner_lr": settings.maml.inner_lr,
        "inner_steps": settings.eval_steps,
        "num_trajectories": settings.eval_trajectories,
        "horizon": settings.maml.horizon,
        "discount": settings.maml.discount,
    }
    results = {}
    for name, policy in policies.items():
        generator = torch.Generator().manual_seed(settings.seed + 1)  # the same episodes' noise for each
        per_goal = evaluate_navigation(
            policy, dict(policy.named_parameters()), goals.to(device), generator=generator, **test
        )
        results[name] = _return_report(EvaluationResult.of(per_goal.cpu()))
        if name in seconds:
            results[name]["training_seconds"] = seconds[name]
    oracle = oracle_returns(goals, settings.maml.horizon)[:, None]  # (G, 1)
    results["oracle"] = {
        **_return_report(EvaluationResult.of(oracle)),
        "what": "straight to the goal at full speed (the paper's: a policy given the goal as input)",
    }
    paper = {
        "source": "Finn et al. (2017), appendix, Table 4 (2-D navigation, average return)",
        "steps": list(range(4)),
        **{name: list(values) for name, values in NAVIGATION_TABLE_4.items()},
    }
    return results, paper


def _return_report(result: EvaluationResult) -> dict[str, object]:
    """The average returns after 0, 1, ... steps, their mean over goals and its 95 % interval.

    Returns are higher for better policies and stay finite (a return lies between minus the
    horizon times the largest distance and 0), so no goal counts as diverged.
    """
    return {
        "steps": list(range(len(result.mean))),
        "goals": result.per_task.shape[0],
        "mean": [_rounded(value) for value in result.mean],
        "ci95": [_rounded(value) for value in result.ci95],
    }


def _report(result: EvaluationResult, steps: tuple[int, ...]) -> dict[str, object]:
    """The errors after each of ``steps`` steps, over all test tasks and over those that did
    not diverge, rounded for the record.

    A task has diverged after n steps when its error is NaN or infinite, or larger than its
    error before any step: fine-tuning made it worse than not adapting at all. The mean over
    all tasks keeps the diverged ones (one blown-up task can make it huge or NaN); the mean
    over the others and the median over all (a NaN counted as the largest error) are what
    one diverged task cannot move far.
    """
    before = result.per_task[:, 0]  # (T,)
    report: dict[str, list[float] | list[int] | int] = {
        "steps": list(steps),
        "tasks": len(before),
        "mean": [],
        "ci95": [],
        "median": [],
        "diverged_tasks": [],
        "mean_without_diverged": [],
        "ci95_without_diverged": [],
    }
    for step in steps:
        after = result.per_task[:, step]  # (T,)
        diverged = ~torch.isfinite(after) | (after > before)
        kept = result.per_task[~diverged]  # (T - diverged, n + 1)
        others = EvaluationResult.of(kept) if len(kept) else None
        report["mean"].append(_rounded(result.mean[step]))
        report["ci95"].append(_rounded(result.ci95[step]))
        report["median"].append(_rounded(_median(after)))
        report["diverged_tasks"].append(int(diverged.sum()))
        report["mean_without_diverged"].append(_rounded(others.mean[step]) if others else math.nan)
        report["ci95_without_diverged"].append(_rounded(others.ci95[step]) if len(kept) > 1 else math.nan)
    return report


def _median(values: torch.Tensor) -> torch.Tensor:
    """The median of ``(T,)`` values, halfway between the middle two for even T; NaN counts
    as the largest value."""
    ordered = values.nan_to_num(nan=math.inf).sort().values
    return (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2


def _rounded(value: torch.Tensor | float) -> float:
    """A float for the record, to four decimals."""
    return round(float(value), 4)


def across_seeds(records: list[dict[str, object]], name: str = "MAML") -> dict[str, object]:
    """The reproduction verdict over sine-wave records of different seeds.

    For each step the paper reports: the mean over seeds of each seed's mean over the test
    tasks that did not diverge (see ``_report``), its 95 % interval across seeds (Student's
    t, seeds - 1 degrees of freedom), the paper's value and where it lies against that
    interval ("above": ours is lower, better; "within"; "below": ours is higher, worse), and
    how many seeds had any diverged task and how many tasks diverged in all.

    Args:
        records: records of ``reproduce("sinusoid", ...)`` with different seeds and the
            same settings otherwise; at least two.
        name: the result to summarise, ``"MAML"`` or ``"pretrained"``.

    Raises:
        ValueError: fewer than two records, a record that is not a sine-wave one, records
            whose settings differ beyond the seed, or two records of one seed.
    """
    if len(records) < 2:
        raise ValueError(f"records must hold at least two sine-wave records, got {len(records)}")
    if any(record.get("experiment") != "sinusoid" for record in records):
        raise ValueError("records must all be sine-wave records (experiment 'sinusoid')")
    settings = [_without_seed(record["settings"]) for record in records]
    if any(other != settings[0] for other in settings[1:]):
        raise ValueError("records must share their settings except for the seed")
    seeds = [record["settings"]["maml"]["seed"] for record in records]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"records must come from different seeds, got seeds {seeds}")
    results = [record["results"][name] for record in records]
    quantile = _t_quantile(0.975, len(records) - 1)
    steps = []
    for index, step in enumerate(records[0]["paper"]["steps"]):
        means = torch.tensor(
            [result["mean_without_diverged"][index] for result in results], dtype=torch.float64
        )
        half_width = quantile * float(means.std()) / math.sqrt(len(means))
        mean, paper = float(means.mean()), records[0]["paper"][name][index]
        diverged = [result["diverged_tasks"][index] for result in results]
        steps.append(
            {
                "step": step,
                "mean": round(mean, 4),
                "ci95": round(half_width, 4),
                "paper": paper,
                "paper_is": "below"
                if paper < mean - half_width
                else "above"
                if paper > mean + half_width
                else "within",
                "seeds_with_diverged_tasks": sum(count > 0 for count in diverged),
                "diverged_tasks": sum(diverged),
            }
        )
    return {"name": name, "seeds": seeds, "tasks_per_seed": results[0]["tasks"], "steps": steps}


def _without_seed(settings: dict[str, object]) -> dict[str, object]:
    """A record's settings with the seed left out, to compare runs of different seeds."""
    return {**settings, "maml": {key: value for key, value in settings["maml"].items() if key != "seed"}}


def _t_quantile(probability: float, degrees: int) -> float:
    """Student's t quantile: bisection on the distribution function, integrated by Simpson's
    rule (no SciPy in the package's dependencies)."""
    log_scale = math.lgamma((degrees + 1) / 2) - math.lgamma(degrees / 2) - 0.5 * math.log(degrees * math.pi)

    def distribution(x: float, intervals: int = 2000) -> float:
        grid = torch.linspace(0.0, x, intervals + 1, dtype=torch.float64)
        density = torch.exp(log_scale - (degrees + 1) / 2 * torch.log1p(grid**2 / degrees))
        weights = torch.ones(intervals + 1, dtype=torch.float64)
        weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
        return 0.5 + float((weights * density).sum()) * x / (3 * intervals)

    low, high = 0.0, 1000.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if distribution(middle) < probability else (low, middle)
    return (low + high) / 2


def environment(device: torch.device) -> dict[str, object]:
    """The versions and the machine behind a record, and the number of processes that trained."""
    return {
        "mamlbook": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "processes": launch_world_size(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def format_record(record: dict[str, object]) -> str:
    """A few lines comparing a record's results with the paper's."""
    where = f"on {record['device']}: {record['wall_seconds']} s"
    lines = [f"{record['experiment']} ({record['preset']} preset) {where}"]
    paper, results = record["paper"], record["results"]
    if record["experiment"] == "sinusoid":
        steps = " / ".join(map(str, paper["steps"]))
        lines.append(f"5-shot MSE after {steps} steps, ours against the paper's:")
        for name, result in results.items():
            theirs = " / ".join(f"{value:.2f}" for value in paper[name])
            diverged = " / ".join(map(str, result["diverged_tasks"]))
            others = _intervals(result["mean_without_diverged"], result["ci95_without_diverged"])
            medians = " / ".join(f"{value:.2f}" for value in result["median"])
            everything = f"all {result['tasks']} tasks"
            lines += [
                f"  {name}   (paper {theirs})",
                f"    {everything:<19}{_intervals(result['mean'], result['ci95'])}",
                f"    diverged tasks     {diverged}",
                f"    the others         {others}",
                f"    median, all tasks  {medians}",
            ]
    elif record["experiment"] == "navigation":
        lines += _navigation_lines(paper, results)
    else:
        result = results["MAML"]
        lines.append(
            f"  MAML {result['episodes']}, {result['steps']} steps: {result['accuracy_percent']:.1f} ± "
            f"{result['ci95_percent']:.1f} %   (paper {paper['MAML'][0]} ± {paper['MAML'][1]} %)"
        )
    return "\n".join(lines)


def _navigation_lines(paper: dict[str, object], results: dict[str, object]) -> list[str]:
    """The navigation record's returns, one line per method, beside the paper's."""
    goals = results["MAML"]["goals"]
    steps = " / ".join(map(str, results["MAML"]["steps"]))
    lines = [
        f"average return after {steps} policy-gradient steps on {goals} new goals, ours against the paper's:"
    ]
    for name, result in results.items():
        theirs = " / ".join(f"{value:.2f}" for value in paper[name])
        lines.append(f"  {name:<11}{_intervals(result['mean'], result['ci95'])}   (paper {theirs})")
    return lines


def format_across_seeds(summary: dict[str, object]) -> str:
    """The verdict of ``across_seeds`` as a few lines, one per step."""
    seeds, tasks = summary["seeds"], summary["tasks_per_seed"]
    lines = [
        f"{summary['name']} over {len(seeds)} seeds ({', '.join(map(str, seeds))}), {tasks} test tasks each:",
        "steps  mean of the seeds' means without diverged tasks  paper  the paper's value is"
        "  seeds with diverged tasks  diverged tasks",
    ]
    for step in summary["steps"]:
        lines.append(
            f"{step['step']:>5}  {_interval(step['mean'], step['ci95']):<47}  {step['paper']:>5.2f}  "
            f"{step['paper_is'] + ' the interval':<20}  {step['seeds_with_diverged_tasks']:>25}  "
            f"{step['diverged_tasks']:>14}"
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
