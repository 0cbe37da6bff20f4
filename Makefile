# facekit: `make demo` runs the pipeline on the bundled sample, `make test` runs the tests.
# Both create .venv on first use (Python 3.11 or 3.12 as python3).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test bench clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,beam]"  # beam: the tests run augment/split on Beam too
	touch $@

setup: $(VENV)/.installed

demo: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

# quality.py and detect.py train on the demo's TFRecords (demo_out/), so the demo runs first
bench: demo
	for b in bench/*.py; do [ "$$b" = bench/runs.py ] || $(PY) $$b || exit 1; done

clean-demo:
	rm -rf demo_out
