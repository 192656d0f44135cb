"""The error a diverging inner loop raises, and its diagnosis: which task, which step, which knob."""

from __future__ import annotations

import torch


class NonFiniteLossError(ValueError):
    """A loss, adapted parameter or meta-gradient became NaN or infinite.

    Attributes:
        history: raised by ``meta_train`` or ``reptile_train``, the ``TrainingHistory``
            of the meta-iterations before the one that failed (theta is left as they
            made it); None otherwise.
    """

    history = None


def raise_if_not_finite(
    support_losses: torch.Tensor,
    final_is_finite: torch.Tensor,
    *,
    rates: str,
    final_what: str,
    query_sets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Raise ``NonFiniteLossError`` naming the first inner step whose loss was not finite.

    A non-finite final value is blamed on the query set when it holds NaN or inf, on
    the params when no inner step was taken, and on the inner learning rate otherwise.

    Args:
        support_losses: ``(T, steps)`` support loss of each task before each inner step.
        final_is_finite: ``(T,)`` bool, whether what the fully adapted parameters gave
            (their values, or their query loss) is finite.
        rates: the inner learning rate as the message should quote it
            (``InnerLoop.describe_rates``).
        final_what: what ``final_is_finite`` describes, for the message.
        query_sets: ``(query_x, query_y)``, ``(T, Q, ...)`` each, looked at only on
            failure; None when ``final_is_finite`` does not depend on them.
    """
    support_is_finite = torch.isfinite(support_losses)
    if bool(support_is_finite.all() & final_is_finite.all()):
        return
    num_steps = support_losses.shape[1]
    bad_steps = (~support_is_finite).any(dim=0).nonzero()
    if len(bad_steps) == 0:
        task = int((~final_is_finite).nonzero()[0])
        if query_sets is not None and not all(
            bool(torch.isfinite(tensor[task]).all()) for tensor in query_sets
        ):
            raise NonFiniteLossError(
                f"non-finite {final_what} for task {task}: its query set holds NaN or inf; "
                "check batch.query_x and batch.query_y"
            )
        if num_steps == 0:
            raise NonFiniteLossError(
                f"non-finite {final_what} for task {task} with no inner step taken: "
                "check the params for NaN or inf"
            )
        raise NonFiniteLossError(
            f"the {final_what} of task {task} became non-finite after all {num_steps} inner "
            f"step(s) with {rates}; try a smaller inner_lr"
        )
    step = int(bad_steps[0])
    task = int((~support_is_finite[:, step]).nonzero()[0])
    if step == 0:
        raise NonFiniteLossError(
            f"the support loss of task {task} is non-finite before any inner step: "
            "check the inputs and the params for NaN or inf"
        )
    raise NonFiniteLossError(
        f"the support loss of task {task} became non-finite at inner step {step + 1} of "
        f"{num_steps} (after {step} update(s) with {rates}); try a smaller inner_lr"
    )
