"""How chapter 7's checkers judge a differentiable result: the inputs the reader's function
changed in place, then the meta-gradient of its result, compared with the reference's second-
order one and with the first-order one to name the mistake."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ..types import Params
from ._problems import all_close, same
from .result import CheckResult

TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}
SIGN = "the inner step climbs the support loss: check the sign of the update"
GRAPH = (
    "the graph from params to the result is cut: {why}. Build the new tensors from params' own "
    "tensors (no .detach(), no copy.deepcopy, no torch.no_grad(), no .data)"
)
_FIRST_ORDER = (
    "the values are right but the meta-gradient is first-order: take the inner gradient with "
    "create_graph=True so that the outer gradient flows through it"
)


def named(**inputs: object) -> dict[str, object]:
    """The inputs of a call by the names a hint gives them: a dict's items as ``params['head.bias']``,
    a batch's fields as ``query_y``, anything else (the model, a list) by its argument's name."""
    found: dict[str, object] = {}
    for argument, value in inputs.items():
        if isinstance(value, Mapping):
            found |= {f"{argument}[{key!r}]": item for key, item in value.items()}
        elif isinstance(value, tuple) and hasattr(value, "_asdict"):
            found |= value._asdict()
        else:
            found[argument] = value
    return found


def inputs_hint(given: Mapping[str, object], kept: Mapping[str, object]) -> CheckResult | None:
    """A hint naming the inputs the function changed in place, ``given`` its copies of ``kept``
    (both as :func:`named` gives them), else None."""
    changed = [name for name, value in kept.items() if not same(given.get(name), value)]
    if not changed:
        return None
    return CheckResult.hint(
        f"the function changed its inputs in place ({', '.join(changed)}): compute with new "
        "tensors and leave the inputs as they were"
    )


def gradients(
    loss: torch.Tensor, inputs: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor | None] | CheckResult:
    """The gradient of the scalar ``loss`` for each of ``inputs`` (None where it does not depend
    on it), or a hint when autograd cannot differentiate it."""
    if not loss.requires_grad:
        return CheckResult.hint(GRAPH.format(why="the result does not depend on params"))
    try:
        grads = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True)
    except RuntimeError as error:
        return CheckResult.hint(GRAPH.format(why=f"autograd raised {str(error).split('. ')[0]!r}"))
    return dict(zip(inputs, grads, strict=True))


def gradient_hint(
    grads: Mapping[str, torch.Tensor | None],
    expected: Params,
    first_order: Params,
    unreached: Callable[[list[str]], str],
) -> CheckResult | None:
    """None when ``grads`` are ``expected``; else the hint for what they are (``unreached(names)``
    when no gradient reaches some of them)."""
    missing = [  # a gradient of zeros where the reference's is not: the input was cut off too
        name for name, grad in grads.items() if grad is None or not (grad.any() or not expected[name].any())
    ]
    if missing:
        return CheckResult.hint(unreached(missing))
    if all_close(grads, expected, **TOLERANCE):
        return None
    if all_close(grads, first_order, **TOLERANCE):
        return CheckResult.hint(_FIRST_ORDER)
    return CheckResult.hint(
        "the values are right but the meta-gradient is not: look for a .detach() or a tensor rebuilt "
        "from plain numbers"
    )


def cut_off(names: list[str]) -> str:
    """The hint when no gradient reaches the inputs ``names``."""
    return GRAPH.format(why=f"no gradient reaches {', '.join(names)}")
