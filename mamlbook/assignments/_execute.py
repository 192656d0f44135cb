"""Execute one submission with papermill, in a process of its own, within a time limit.

``python -m mamlbook.assignments._execute SPEC.json``, where the spec holds ``input``,
``output``, ``cwd``, ``parameters``, ``time_limit_s`` and ``cell_time_limit_s``. A cell that
raises is recorded in the output notebook and execution goes on; a cell that runs past
its limit is interrupted and execution goes on; past the whole time limit the kernel is
shut down. The exit status says which: 0 (ran to the end, perhaps with errors), 3 (the time
limit), 4 (papermill could not run the notebook; the reason is on stderr).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

RAN, TIMED_OUT, FAILED = 0, 3, 4
KERNEL = "python3"


class NotebookTimeout(BaseException):
    """The submission ran past its time limit."""


def kill_descendants(pid: int) -> None:
    """Kill every process started by ``pid``: the kernel, and whatever the student's code started."""
    import psutil

    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for process in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _expire(signum, frame):
    kill_descendants(os.getpid())  # the kernel runs in a process group of its own: stop it here
    raise NotebookTimeout


def main(spec_path: str) -> int:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    with open(spec_path) as file:
        spec = json.load(file)
    timed = hasattr(signal, "SIGALRM")  # elsewhere (Windows) the grader's own limit stops the run
    if timed:
        signal.signal(signal.SIGALRM, _expire)
        signal.setitimer(signal.ITIMER_REAL, spec["time_limit_s"])
    try:
        papermill.execute_notebook(
            spec["input"],
            spec["output"],
            parameters=spec["parameters"],
            kernel_name=KERNEL,
            cwd=spec["cwd"],
            progress_bar=False,
            execution_timeout=spec["cell_time_limit_s"],
            interrupt_on_timeout=True,
            allow_errors=True,
        )
    except PapermillExecutionError:  # the errors are in the output notebook, cell by cell
        return RAN
    except NotebookTimeout:
        return TIMED_OUT
    except Exception as error:  # a notebook papermill cannot run: the grader reports why
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return FAILED
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return RAN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
