# The README's two commands: `make book` builds the book, `make test` runs every test.
# Both set up a virtual environment in .venv first; a second run reuses it.

PYTHON ?= python3
# Torch is installed first, only where the environment has none; override for a CUDA build,
# e.g. `make test TORCH="torch==2.13.0 --index-url <your CUDA index>"`.
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Notebook kernels come from the environment, not from a kernel installed elsewhere.
export JUPYTER_PREFER_ENV_PATH := 1

.PHONY: setup book site-check test lint notebooks assignments clean

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(TORCH)
	$(BIN)/python -m pip install -e ".[book,test,dev,site,assignments]"
	touch $@

book: setup
	$(BIN)/jupyter-book build . -W -n --keep-going

# Open every page of the built book in headless Chromium: broken links, missing images,
# JavaScript errors; screenshots go to _build/site-check/. Needs Debian's chromium.
site-check: book
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "site-check: installing Debian's chromium and chromium-driver with apt-get"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	fi
	$(BIN)/python scripts/check_site.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tests run in $(WORKERS) processes (pytest-xdist), a test file per process at a time, so a
# notebook's cells stay in one kernel; one thread each, so the processes share the cores.
WORKERS ?= 2
test: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile

# Student notebooks (solutions taken out, outputs cleared) and autograder bundles, one per
# chapter with exercises, from the chapters themselves; see the book's Instructor's guide.
assignments: setup
	$(BIN)/mamlbook assignments build --book book --out _build/assignments

# Execute every notebook with its default parameters (DEVICE=cuda on a GPU machine).
DEVICE ?= auto
notebooks: setup
	$(BIN)/python scripts/run_notebooks.py --device $(DEVICE)

clean:
	rm -rf _build
