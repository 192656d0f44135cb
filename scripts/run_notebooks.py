"""Run the book's notebooks with papermill, at their defaults or with other parameters.

Every notebook has one cell tagged ``parameters`` that holds the sizes that decide its
run time and the ``device``. This script replaces those values, from a named set in
``book/parameters.yml`` (``--parameters smoke``), from ``--device`` and from ``-p NAME
VALUE`` overrides, in that order, and executes the notebook with the ``python3``
kernel of the running environment.

Examples, from the repository root::

    python scripts/run_notebooks.py                      # every notebook, its defaults
    python scripts/run_notebooks.py --parameters smoke   # every notebook, in seconds
    python scripts/run_notebooks.py --device cuda -p iterations 70000 book/quickstart.ipynb

The executed copies are written to ``_build/executed/`` (``--output-dir``); the
committed notebooks are rewritten only with ``--inplace``. Before a run, each notebook's
Colab install cell is pinned to the tag of the package version that runs it
(``@v0.1.0``), so that a notebook saved from this build installs the package it was
built with. ``--times FILE`` also writes
each notebook's wall time, with the parameters, versions and machine, as JSON (the book's
appendix shows ``benchmarks/results/chapter_times_cpu.json``). The exit status is 1 when
any notebook fails, and 2 when the arguments are wrong.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml
from papermill.translators import PythonTranslator

from mamlbook._files import write_atomically

REPOSITORY = Path(__file__).resolve().parent.parent
BOOK = REPOSITORY / "book"
PARAMETER_SETS = BOOK / "parameters.yml"
DEFAULT_OUTPUT_DIR = REPOSITORY / "_build" / "executed"
KERNEL = "python3"  # the kernel the book build uses too (nb_kernel_rgx_aliases)
# The repository in the Colab install cells, with the tag it is pinned to if any.
INSTALLED_FROM = re.compile(r"(git\+https://github\.com/mamlbook/mamlbook)(@[\w.\-]+)?")
CLONED_TAG = re.compile(r"(git clone [^\n]*--branch )[\w.\-]+")


class NotebookError(Exception):
    """A notebook, or the parameters asked for it, cannot be run as requested."""


def book_notebooks() -> list[Path]:
    """Every notebook under ``book/``, skipping checkpoints and build folders."""
    return sorted(
        path
        for path in BOOK.rglob("*.ipynb")
        if not any(part.startswith((".", "_")) for part in path.relative_to(BOOK).parts)
    )


def notebook_key(notebook: Path) -> str:
    """The notebook's name in ``book/parameters.yml``: its path relative to ``book/``."""
    try:
        return notebook.resolve().relative_to(BOOK).as_posix()
    except ValueError:
        return notebook.name


def parameters_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The code cells tagged ``parameters``."""
    return [
        cell
        for cell in notebook.cells
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])
    ]


def parse_value(text: str) -> Any:
    """A ``-p`` value read as YAML (``20`` -> int, ``true`` -> bool, ``cpu`` -> str).

    Numbers in exponent notation such as ``1e-3``, which YAML 1.1 reads as strings,
    are read as floats.
    """
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(text)
        except ValueError:
            return value
    return value


def load_parameter_sets(path: Path = PARAMETER_SETS) -> dict[str, dict[str, dict[str, Any]]]:
    """``{notebook: {set name: {parameter: value}}}`` from ``book/parameters.yml``."""
    if not path.is_file():
        return {}
    sets = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(sets, dict) or not all(
        isinstance(named, dict) and all(isinstance(values, dict) for values in named.values())
        for named in sets.values()
    ):
        raise NotebookError(f"{path} must map each notebook to named sets of parameter values")
    return sets


def resolve_parameters(
    notebook: Path,
    *,
    set_name: str | None,
    device: str | None,
    overrides: list[tuple[str, str]],
    parameter_sets: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """The values to inject into ``notebook``, after checking them against its parameters cell.

    Args:
        notebook: the ``.ipynb`` file.
        set_name: a set of ``book/parameters.yml`` for this notebook, or None.
        device: the value of the ``device`` parameter, or None to keep the default.
        overrides: ``(name, value)`` pairs from ``-p``; the values are parsed as YAML.
        parameter_sets: the contents of ``book/parameters.yml``.

    Returns:
        Parameter names and values, the set's first, then ``device``, then overrides.

    Raises:
        NotebookError: the notebook has no single ``parameters`` cell, the set does
            not exist, or a name is not one of the notebook's parameters.
    """
    cells = parameters_cells(nbformat.read(notebook, as_version=4))
    if len(cells) != 1:
        raise NotebookError(
            f"{notebook}: expected exactly one code cell tagged 'parameters', found {len(cells)}"
        )
    parameters: dict[str, Any] = {}
    if set_name is not None:
        key = notebook_key(notebook)
        available = parameter_sets.get(key, {})
        if set_name not in available:
            raise NotebookError(
                f"{notebook}: {PARAMETER_SETS.relative_to(REPOSITORY)} has no set {set_name!r} "
                f"for {key!r} (its sets: {sorted(available) or 'none'})"
            )
        parameters.update(available[set_name])
    if device is not None:
        parameters["device"] = device
    parameters.update((name, parse_value(value)) for name, value in overrides)
    known = [parameter.name for parameter in PythonTranslator.inspect(cells[0])]
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise NotebookError(
            f"{notebook}: no parameter named {', '.join(unknown)} in its parameters cell "
            f"(it has: {', '.join(known)})"
        )
    return parameters


def output_path(notebook: Path, output_dir: Path | None) -> Path:
    """Where the executed copy goes: ``notebook`` itself when ``output_dir`` is None."""
    if output_dir is None:
        return notebook
    return output_dir / notebook_key(notebook)


def pin_install_cells(notebook: nbformat.NotebookNode, version: str) -> None:
    """Point every Colab install cell (and the appendix's clone) at the tag ``v<version>``."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and "google.colab" in cell.source:
            source = INSTALLED_FROM.sub(rf"\g<1>@v{version}", cell.source)
            cell.source = CLONED_TAG.sub(rf"\g<1>v{version}", source)


def run_notebook(notebook: Path, output: Path, parameters: dict[str, Any]) -> None:
    """Execute ``notebook`` in its own folder with papermill, writing the result to ``output``."""
    import mamlbook

    output.parent.mkdir(parents=True, exist_ok=True)
    source = nbformat.read(notebook, as_version=4)
    pin_install_cells(source, mamlbook.__version__)
    try:
        papermill.execute_notebook(
            source,
            str(output),
            parameters=parameters,
            kernel_name=KERNEL,
            cwd=str(notebook.parent),
            progress_bar=False,
        )
    finally:  # a failed run's notebook is written too, with the error in its cell
        if output.is_file():
            record_relative_paths(output, notebook)


def record_relative_paths(output: Path, notebook: Path) -> None:
    """Name the notebook and its executed copy in papermill's metadata relative to the
    repository, instead of the notebook object and the absolute paths of this machine."""
    executed = nbformat.read(output, as_version=4)
    for key, path in (("input_path", notebook), ("output_path", output)):
        try:
            executed.metadata.papermill[key] = path.resolve().relative_to(REPOSITORY).as_posix()
        except ValueError:  # outside the repository: its name alone
            executed.metadata.papermill[key] = path.name
    text = nbformat.writes(executed)
    write_atomically(output, lambda file: file.write(text.encode()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(
        description="Run the book's notebooks with papermill.",
        epilog="Parameter sets are read from book/parameters.yml.",
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="notebooks to run (default: every notebook in book/)"
    )
    parser.add_argument(
        "--parameters", metavar="NAME", help="a named parameter set from book/parameters.yml, e.g. smoke"
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="the value of each notebook's device parameter"
    )
    parser.add_argument(
        "-p",
        dest="overrides",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set one parameter; VALUE is read as YAML (may be repeated)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help="folder for the executed notebooks (default: _build/executed)",
    )
    where.add_argument(
        "--inplace", action="store_true", help="overwrite the notebooks themselves with the executed ones"
    )
    parser.add_argument(
        "--times", type=Path, metavar="FILE", help="also write each notebook's wall time here, as JSON"
    )
    return parser.parse_args(argv)


def times_record(
    seconds: dict[str, float], parameters: dict[str, dict[str, Any]], device: str | None
) -> dict[str, Any]:
    """What ``--times`` writes: each notebook's wall time and parameters, and the versions and machine."""
    import mamlbook
    from mamlbook.reproduce import environment

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(mamlbook.resolve_device(device or "auto")),
        "notebooks": {
            key: {"seconds": round(seconds[key], 1), "parameters": parameters[key]} for key in seconds
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Check every requested notebook and its parameters, then run them one by one.

    Returns:
        0 when every notebook ran, 1 when any failed, 2 when the arguments are wrong.
    """
    args = parse_args(argv)
    notebooks = args.notebooks or book_notebooks()
    if not notebooks:
        print(f"no notebooks found in {BOOK}", file=sys.stderr)
        return 2
    output_dir = None if args.inplace else args.output_dir
    try:
        missing = [str(notebook) for notebook in notebooks if not notebook.is_file()]
        if missing:
            raise NotebookError(f"no such notebook: {', '.join(missing)}")
        parameter_sets = load_parameter_sets()
        plans = [
            (
                notebook,
                resolve_parameters(
                    notebook,
                    set_name=args.parameters,
                    device=args.device,
                    overrides=args.overrides,
                    parameter_sets=parameter_sets,
                ),
            )
            for notebook in notebooks
        ]
    except NotebookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if args.times is not None:  # fail before the runs, not after them
        try:
            args.times.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"error: --times {args.times}: cannot create its folder ({error})", file=sys.stderr)
            return 2

    failed = []
    seconds: dict[str, float] = {}
    for notebook, parameters in plans:
        output = output_path(notebook, output_dir)
        shown = ", ".join(f"{name}={value!r}" for name, value in parameters.items()) or "defaults"
        print(f"running {notebook} ({shown}) -> {output}", flush=True)
        start = time.perf_counter()
        try:
            run_notebook(notebook, output, parameters)
        except Exception as error:  # report every notebook's failure, then fail at the end
            failed.append(notebook)
            print(f"FAILED {notebook} after {time.perf_counter() - start:.1f} s:\n{error}", file=sys.stderr)
        else:
            seconds[notebook_key(notebook)] = time.perf_counter() - start
            print(f"ok     {notebook} in {seconds[notebook_key(notebook)]:.1f} s", flush=True)
    if args.times is not None:
        plan_parameters = {notebook_key(notebook): parameters for notebook, parameters in plans}
        record = times_record(seconds, plan_parameters, args.device)
        text = json.dumps(record, indent=2) + "\n"
        write_atomically(args.times, lambda file: file.write(text.encode()))
        print(f"wrote {args.times}")
    if failed:
        print(
            f"{len(failed)} of {len(plans)} notebooks failed: {', '.join(map(str, failed))}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
