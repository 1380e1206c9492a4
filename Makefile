# segnotes: `make book` builds the book, `make test` runs the tests. Both set everything up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEGNOTES := $(PY) -m segnotes.cli
INSTALLED := $(VENV)/.installed
# make checkpoints: training processes at once (one torch thread each) and where they train
JOBS ?= 2
DEVICE ?= cpu

DATA_ROOT := data/shapes
DATA_ARGS := --num-train 2000 --num-val 500 --seed 0 --image-size 128
DATA_STAMP := data/.stamps/shapes
# the variant with handles, for the LSE chapter (same arguments plus --handles)
HANDLES_ROOT := data/shapes_handles
# the many-category variant with handles, for the LSE chapter's curve over the number of mask classes
ATTRIBUTES_ROOT := data/shapes_attributes
NOTEBOOKS = $(shell $(PY) tools/toc_notebooks.py)
# One thread per process keeps CI's 2 cores predictable; torch still uses both cores in the kernels we time.
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: help setup data book site test pytest nbval nbval-anycpu browser anywhere notebooks checkpoints manifest bench lab clean vendor-js

help:
	@echo "make book      set up, generate data, execute every chapter, build _build/html"
	@echo "make test      set up, generate data, pytest tests/, pytest --nbval on every chapter (twice: this CPU's"
	@echo "               kernels and PyTorch's plain ones, as another CPU computes), browser tests"
	@echo "make site      build _build/html from the notebooks' stored outputs (what GitHub Pages publishes)"
	@echo "make browser   build the site, then open every page in headless Chromium (tests/book)"
	@echo "make anywhere  run every chapter from the built wheel in a fresh venv, empty folder, empty HOME"
	@echo "make data      generate and verify the shapes data sets in $(DATA_ROOT), $(HANDLES_ROOT) and $(ATTRIBUTES_ROOT)"
	@echo "make notebooks re-execute the chapters in place (refreshes their stored outputs)"
	@echo "make checkpoints retrain the models the chapters load (hours on a CPU, JOBS=2 DEVICE=cpu; resumable)"
	@echo "make manifest  rewrite segnotes/downloads.sha256 from data/checkpoints (make checkpoints does it too)"
	@echo "make bench     run benchmarks/ and write benchmarks/results/table.md"
	@echo "make lab       open the book in JupyterLab"
	@echo "make clean     remove the build, the generated data and caches (keeps .venv)"

setup: $(INSTALLED)

# Reinstall only when the package's metadata or the pinned versions change.
$(INSTALLED): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[book,test,bench]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (segnotes)" >/dev/null
	@touch $@

data: $(DATA_STAMP)

# Idempotent: generate() returns at once when the folder already holds this data set.
# A folder left by an older generator is regenerated; the checksums must then match.
$(DATA_STAMP): $(INSTALLED) segnotes/data/shapes.py segnotes/data/png.py data/shapes.sha256 data/shapes_handles.sha256 data/shapes_attributes.sha256
	@$(SEGNOTES) data shapes --root $(DATA_ROOT) $(DATA_ARGS) || { \
	  echo "regenerating $(DATA_ROOT) (it held a data set made differently)"; \
	  rm -rf $(DATA_ROOT); $(SEGNOTES) data shapes --root $(DATA_ROOT) $(DATA_ARGS); }
	@$(SEGNOTES) data verify --root $(DATA_ROOT) --checksums data/shapes.sha256
	@$(SEGNOTES) data shapes --root $(HANDLES_ROOT) $(DATA_ARGS) --handles || { \
	  echo "regenerating $(HANDLES_ROOT) (it held a data set made differently)"; \
	  rm -rf $(HANDLES_ROOT); $(SEGNOTES) data shapes --root $(HANDLES_ROOT) $(DATA_ARGS) --handles; }
	@$(SEGNOTES) data verify --root $(HANDLES_ROOT) --checksums data/shapes_handles.sha256
	@$(SEGNOTES) data shapes --root $(ATTRIBUTES_ROOT) $(DATA_ARGS) --handles --attributes || { \
	  echo "regenerating $(ATTRIBUTES_ROOT) (it held a data set made differently)"; \
	  rm -rf $(ATTRIBUTES_ROOT); $(SEGNOTES) data shapes --root $(ATTRIBUTES_ROOT) $(DATA_ARGS) --handles --attributes; }
	@$(SEGNOTES) data verify --root $(ATTRIBUTES_ROOT) --checksums data/shapes_attributes.sha256
	@mkdir -p $(dir $@) && touch $@

book: $(DATA_STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "open _build/html/index.html"

# The same pages as `make book`, from the outputs stored in the notebooks (which `make nbval` proves the code
# still gives) instead of executing every chapter again: seconds, not ten minutes of CPU. GitHub Pages publishes it.
SITE_CONFIG := _build/site_config.yml
site: $(INSTALLED)
	$(PY) tools/site_config.py _config.yml $(SITE_CONFIG)
	$(VENV)/bin/jupyter-book build . --config $(SITE_CONFIG) -W -n --keep-going
	@echo "open _build/html/index.html"

test: pytest nbval nbval-anycpu browser

pytest: $(DATA_STAMP)
	$(PY) -m pytest tests -q -m "not browser"

# Headless Chromium on the built site (tests/book) and on the widgets' page versions (tests/widgets/test_static.py).
# Without Chromium they are skipped, and say so; under CI=true they fail instead.
browser: site
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
	  || echo "*** browser tests SKIPPED: no Chromium on this machine (apt-get install chromium)$${CI:+; CI=$$CI, so they fail} ***"
	$(PY) -m pytest tests -q -m browser -p no:cacheprovider
	@echo "screenshots of every page: _build/screenshots/"

NBVAL = $(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with book/sanitize.cfg -p no:cacheprovider

nbval: $(DATA_STAMP)
	$(NBVAL) $(NOTEBOOKS)

# The stored outputs must not depend on this CPU: PyTorch's plain (non-vectorised) kernels add
# floats in another order, as another machine's would.
nbval-anycpu: $(DATA_STAMP)
	ATEN_CPU_CAPABILITY=default $(NBVAL) $(NOTEBOOKS)

# As a reader outside the repository: the wheel in a fresh venv (newest dependencies, no
# constraints), each chapter alone in an empty folder with an empty HOME, data/ served on
# 127.0.0.1 as the download mirror.
anywhere: $(INSTALLED)
	$(PY) tools/anywhere.py

notebooks: $(DATA_STAMP)
	@for nb in $(NOTEBOOKS); do echo "executing $$nb"; \
	  $(VENV)/bin/jupyter execute --inplace --kernel_name python3 $$nb; done

# Resumable: an interrupted run continues from the last checkpoint; finished ones are kept.
checkpoints: $(DATA_STAMP)
	$(PY) -m segnotes.experiments all --out data/checkpoints --jobs $(JOBS) --device $(DEVICE)
	$(MAKE) manifest

# The sha256 list that segnotes.hub checks downloads against (shipped in the wheel).
manifest: $(INSTALLED)
	$(PY) -c "import segnotes.hub as hub; print(hub.write_manifest('data'), 'files in', hub.MANIFEST)"

bench: $(DATA_STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

lab: $(DATA_STAMP)
	$(VENV)/bin/jupyter lab book/

vendor-js:
	bash tools/vendor_widgets_js.sh

clean:
	rm -rf _build $(DATA_ROOT) $(HANDLES_ROOT) data/.stamps .pytest_cache benchmarks/results
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
