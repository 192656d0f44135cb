"""Training checkpoints in one process: a resumed run is the uninterrupted one, and a
checkpoint of another run, or no checkpoint at all, is refused with a clear error."""

from __future__ import annotations

import dataclasses

import distributed_runs as runs
import pytest
import torch

import mamlbook as mb
from mamlbook.reptile import ReptileConfig

FOUR = dataclasses.replace(runs.CONFIGS["meta_sgd"], iterations=4)
REPTILE = dataclasses.replace(runs.CONFIGS["reptile"], iterations=4)


def trained(config, **options):
    model = runs.make_model()
    history = runs.train("meta_sgd", model, config=config, process_group=None, **options)
    return model, history


@pytest.mark.parametrize("config", [FOUR, REPTILE], ids=["meta_sgd", "reptile"])
def test_a_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_one_does(tmp_path, config):
    checkpoint = tmp_path / "run.ckpt"
    trained(dataclasses.replace(config, iterations=2), checkpoint=checkpoint)
    resumed, history = trained(config, checkpoint=checkpoint)
    alone, alone_history = trained(config)
    for (name, tensor), other in zip(resumed.named_parameters(), alone.parameters(), strict=True):
        assert torch.equal(tensor, other), name
    assert torch.equal(history.meta_losses, alone_history.meta_losses)
    if not isinstance(config, ReptileConfig):  # Meta-SGD's rates and Adam's moments came back too
        for name, rate in history.inner_lr.items():
            assert torch.equal(rate, alone_history.inner_lr[name]), name


def test_the_checkpoint_is_written_every_so_many_iterations_and_at_the_end(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    trained(dataclasses.replace(FOUR, iterations=3), checkpoint=checkpoint, checkpoint_every=2)
    state = mb.checkpoint.load_training_state(
        checkpoint,
        learner="meta-training",
        config=dataclasses.asdict(dataclasses.replace(FOUR, iterations=3)),
    )
    assert state["iteration"] == 3 and len(state["meta_losses"]) == 3
    assert [path.name for path in tmp_path.iterdir()] == ["run.ckpt"]  # no temporary file left


def test_a_checkpoint_of_other_settings_is_refused_naming_them(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    trained(dataclasses.replace(FOUR, iterations=2), checkpoint=checkpoint)
    other = dataclasses.replace(FOUR, inner_lr=0.1, outer_lr=0.5)
    with pytest.raises(
        ValueError, match=r"other settings: inner_lr 0.05 \(now 0.1\), outer_lr 0.01 \(now 0.5\)"
    ):
        trained(other, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="comes from meta-training, not from Reptile"):
        runs.train("reptile", runs.make_model(), process_group=None, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="is at meta-iteration 2, past the 1 iterations asked for"):
        trained(dataclasses.replace(FOUR, iterations=1), checkpoint=checkpoint)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    params = mb.save_params(dict(runs.make_model().named_parameters()), tmp_path / "theta.pt")
    with pytest.raises(ValueError, match="is not a training checkpoint of this mamlbook version"):
        trained(FOUR, checkpoint=params)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a training checkpoint"):
        trained(FOUR, checkpoint=tmp_path / "junk.ckpt")


def test_bad_checkpoint_arguments_are_refused(tmp_path):
    with pytest.raises(TypeError, match="checkpoint must be None or a file path, got int"):
        trained(FOUR, checkpoint=3)
    with pytest.raises(ValueError, match="checkpoint_every"):
        trained(FOUR, checkpoint=tmp_path / "run.ckpt", checkpoint_every=0)
    with pytest.raises(ValueError, match="does not exist"):
        trained(FOUR, checkpoint=tmp_path / "missing" / "run.ckpt")
    (tmp_path / "folder.ckpt").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        trained(FOUR, checkpoint=tmp_path / "folder.ckpt")
