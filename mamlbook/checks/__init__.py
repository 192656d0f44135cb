"""Checkers for the book's exercises: call one on your own function to get a verdict.

Each checker runs the function on small problems drawn from its ``seed`` (0, the
default, gives the chapter's; a grader may pick another), compares it with the
package's reference implementation and returns a :class:`~mamlbook.checks.result.CheckResult`: correct, or a
hint that names the likely mistake (for MAML: a missing ``create_graph``, adapting on
the query set, an in-place update, a wrong sign, the wrong averaging axis, not
starting each task from theta) without printing the solution.
"""

# Each chapter's checkers are re-exported below, one import line per chapter module,
# beside the verdict they all return (``result``).
from .accuracy import check_accuracy
from .anil import check_anil_adaptation
from .autograd import check_sgd_step
from .episodes import check_sample_episode
from .first_order import check_fomaml_gradient, check_reptile_step
from .gradient_descent import check_gradient_descent, check_linear_regression_gradient
from .maml import check_maml_loss
from .meta_sgd import check_meta_sgd_step
from .multi_step_loss import check_multi_step_loss
from .policy_gradient_step import check_policy_gradient_step
from .reinforcement import check_discounted_returns, check_policy_gradient_surrogate
from .result import CheckResult
from .tasks import check_fine_tune_scores, check_mean_and_ci95

__all__ = [
    "CheckResult",
    "check_accuracy",
    "check_anil_adaptation",
    "check_discounted_returns",
    "check_fine_tune_scores",
    "check_fomaml_gradient",
    "check_gradient_descent",
    "check_linear_regression_gradient",
    "check_maml_loss",
    "check_mean_and_ci95",
    "check_meta_sgd_step",
    "check_multi_step_loss",
    "check_policy_gradient_step",
    "check_policy_gradient_surrogate",
    "check_reptile_step",
    "check_sample_episode",
    "check_sgd_step",
]
