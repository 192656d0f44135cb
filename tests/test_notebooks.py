"""The book's notebooks: each runs with its smoke parameters, and each keeps the conventions
that the book build, papermill and nbval rely on (STYLE.md, points 11-13).

nbval itself (``pytest book``) re-executes every notebook at its defaults and compares
the cells marked ``# NBVAL_CHECK_OUTPUT``; the tests here are the cheap checks.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import mamlbook

pytestmark = pytest.mark.book  # minutes: not in the quick tier (pytest -m "not book")

REPOSITORY = Path(__file__).resolve().parent.parent
BOOK = REPOSITORY / "book"
RUN_NOTEBOOKS = REPOSITORY / "scripts" / "run_notebooks.py"
NOTEBOOKS = sorted(path for path in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in path.parts)

# Cell tags that Jupyter Book (MyST-NB), papermill, nbclient or nbval act on. Any other
# tag does nothing, silently, so a misspelt one is an error here.
KNOWN_TAGS = {
    # papermill
    "parameters",
    "injected-parameters",
    # MyST-NB / Jupyter Book
    "hide-input",
    "hide-output",
    "hide-cell",
    "remove-input",
    "remove-output",
    "remove-cell",
    "remove-stderr",
    "remove-stdout",
    "full-width",
    "margin",
    "output_scroll",
    "scroll-output",
    "scroll-input",
    "thebe-init",
    # nbclient
    "skip-execution",
    "raises-exception",
    # nbval
    "nbval-ignore-output",
    "nbval-check-output",
    "nbval-skip",
    "nbval-raises-exception",
}


def notebook_id(path: Path) -> str:
    return path.relative_to(BOOK).as_posix()


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def count_images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {}) for cell in code_cells(notebook) for output in cell.outputs
    )


def toc_files(entry: object) -> set[str]:
    """Every ``file:`` named anywhere in a parsed ``_toc.yml``, and its ``root``."""
    found: set[str] = set()
    if isinstance(entry, dict):
        for key, value in entry.items():
            if key in ("file", "root") and isinstance(value, str):
                found.add(str(Path(value).with_suffix("")))
            else:
                found |= toc_files(value)
    elif isinstance(entry, list):
        for item in entry:
            found |= toc_files(item)
    return found


def load_run_notebooks():
    """``scripts/run_notebooks.py`` imported as a module, to call its ``main`` in-process."""
    spec = importlib.util.spec_from_file_location("run_notebooks", RUN_NOTEBOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_book_has_notebooks():
    assert NOTEBOOKS, f"no notebooks found under {BOOK}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_runs_with_smoke_parameters(path: Path, tmp_path: Path):
    command = [
        sys.executable,
        str(RUN_NOTEBOOKS),
        "--parameters",
        "smoke",
        "--device",
        "cpu",
        "--output-dir",
        str(tmp_path),
        "--times",
        str(tmp_path / "times.json"),
        str(path),
    ]
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    record = json.loads((tmp_path / "times.json").read_text(encoding="utf-8"))
    assert record["environment"]["gpu"] is None  # --device cpu
    timed = record["notebooks"]
    assert list(timed) == [notebook_id(path)]
    assert timed[notebook_id(path)]["seconds"] > 0
    assert timed[notebook_id(path)]["parameters"]["device"] == "cpu"
    executed = read(tmp_path / notebook_id(path))
    assert count_images(executed) == count_images(read(path)), (
        "the smoke run drew a different number of figures than the committed notebook holds; "
        "a non-inline matplotlib backend (e.g. MPLBACKEND=Agg in the environment) hides them"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_has_one_parameters_cell_with_device(path: Path):
    cells = [cell for cell in code_cells(read(path)) if "parameters" in tags(cell)]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    assert any(line.split("=")[0].strip() == "device" for line in cells[0].source.splitlines()), (
        "the parameters cell must set `device`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_has_a_smoke_parameter_set(path: Path):
    sets = yaml.safe_load((BOOK / "parameters.yml").read_text(encoding="utf-8")) or {}
    assert "smoke" in sets.get(notebook_id(path), {}), (
        f"book/parameters.yml needs a 'smoke' set for {notebook_id(path)!r}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_has_a_colab_install_cell(path: Path):
    assert any(
        "google.colab" in cell.source and "%pip install" in cell.source for cell in code_cells(read(path))
    ), 'expected a cell: if "google.colab" in sys.modules: %pip install ...'


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_colab_install_cell_pins_the_package_version(path: Path):
    tag = f"@v{mamlbook.__version__}"
    cells = [cell.source for cell in code_cells(read(path)) if "google.colab" in cell.source]
    assert all(tag in source for source in cells), (
        f"the Colab install cell must install {tag}: run scripts/run_notebooks.py --inplace"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_has_an_output_checked_by_nbval(path: Path):
    checked = [cell for cell in code_cells(read(path)) if cell.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert checked, "expected at least one cell whose first line is # NBVAL_CHECK_OUTPUT"
    assert all(cell.outputs for cell in checked), "a # NBVAL_CHECK_OUTPUT cell has no stored output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_is_committed_executed(path: Path):
    notebook = read(path)
    unexecuted = [index for index, cell in enumerate(code_cells(notebook)) if cell.execution_count is None]
    assert not unexecuted, f"code cells {unexecuted} have no execution_count: commit the executed notebook"
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_is_in_the_table_of_contents(path: Path):
    listed = toc_files(yaml.safe_load((REPOSITORY / "_toc.yml").read_text(encoding="utf-8")))
    assert str(path.relative_to(REPOSITORY).with_suffix("")) in listed, "add the notebook to _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_uses_only_known_cell_tags(path: Path):
    unknown = {tag for cell in read(path).cells for tag in tags(cell)} - KNOWN_TAGS
    assert not unknown, f"unknown cell tags {sorted(unknown)}; known: {sorted(KNOWN_TAGS)}"


def write_notebook(path: Path, *sources: str, parameters: int | None = 0) -> Path:
    """A notebook of code cells; the cell at index ``parameters`` is tagged ``parameters``."""
    cells = [nbformat.v4.new_code_cell(source) for source in sources]
    if parameters is not None:
        cells[parameters].metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_run_notebooks_rejects_a_notebook_without_parameters_cell(tmp_path: Path, capsys):
    notebook = write_notebook(tmp_path / "plain.ipynb", "x = 1", parameters=None)
    assert load_run_notebooks().main([str(notebook), "--output-dir", str(tmp_path / "out")]) == 2
    assert "exactly one code cell tagged 'parameters', found 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_run_notebooks_rejects_a_missing_parameter_set(tmp_path: Path, capsys):
    notebook = write_notebook(tmp_path / "unlisted.ipynb", 'device = "auto"')
    arguments = [str(notebook), "--parameters", "smoke", "--output-dir", str(tmp_path / "out")]
    assert load_run_notebooks().main(arguments) == 2
    assert "has no set 'smoke' for 'unlisted.ipynb'" in capsys.readouterr().err


def test_run_notebooks_rejects_an_unknown_parameter(tmp_path: Path, capsys):
    notebook = write_notebook(tmp_path / "small.ipynb", 'iterations = 10\ndevice = "auto"')
    arguments = [str(notebook), "-p", "iteratons", "5", "--output-dir", str(tmp_path / "out")]
    assert load_run_notebooks().main(arguments) == 2
    assert "no parameter named iteratons" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "value"),
    [("20", 20), ("1e-3", 1e-3), ("0.5", 0.5), ("true", True), ("cpu", "cpu"), ("[1, 2]", [1, 2])],
)
def test_run_notebooks_reads_values_as_yaml(text: str, value: object):
    assert load_run_notebooks().parse_value(text) == value


def test_pin_install_cells_sets_the_tag_of_a_version():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            'if "google.colab" in sys.modules:\n'
            '    %pip install -q "mamlbook @ git+https://github.com/mamlbook/mamlbook"\n'
            "    !git clone -q --depth 1 --branch v0.0.9 https://github.com/mamlbook/mamlbook repository"
        ),
        nbformat.v4.new_code_cell('print("git+https://github.com/mamlbook/mamlbook")'),
    ]
    load_run_notebooks().pin_install_cells(notebook, "1.2.3")
    assert 'mamlbook/mamlbook@v1.2.3"' in notebook.cells[0].source
    assert "--branch v1.2.3 " in notebook.cells[0].source
    assert notebook.cells[1].source == 'print("git+https://github.com/mamlbook/mamlbook")'


@pytest.mark.book
def test_an_executed_notebook_names_its_paths_relative_to_the_repository(tmp_path: Path):
    output = tmp_path / "executed" / "00_idea.ipynb"
    arguments = [str(BOOK / "00_idea.ipynb"), "--parameters", "smoke", "--output-dir", str(output.parent)]
    assert load_run_notebooks().main(arguments) == 0
    papermill_metadata = nbformat.read(output, as_version=4).metadata.papermill
    assert papermill_metadata["input_path"] == "book/00_idea.ipynb"
    assert papermill_metadata["output_path"] == "00_idea.ipynb"
    assert str(REPOSITORY) not in output.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_holds_no_absolute_path_of_this_machine(path: Path):
    assert str(REPOSITORY) not in path.read_text(encoding="utf-8"), (
        "an absolute path of this machine is in the notebook: run scripts/run_notebooks.py --inplace"
    )
