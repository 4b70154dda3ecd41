# The two commands of the README:  make demo  (the whole pipeline on the sample data)  and  make test.
# Both create or reuse the venv of one pinned stack (scripts/stack.sh picks it; docs/stacks.md):
#   STACK=1.16  TFX 1.16 on Python 3.10, .venv
#   STACK=1.21  TFX 1.21 on Python 3.11, .venv-1.21 (glibc >= 2.38, else scripts/debian13_root.sh)
# PYTHON=/path/to/python3.X names the interpreter; VENV=path overrides the venv's path.
SHELL := /bin/bash
ifeq ($(origin STACK),undefined)
STACK := $(shell scripts/stack.sh 2>/dev/null)
endif
VENV := $(if $(filter 1.21,$(STACK)),.venv-1.21,.venv)
PY := $(VENV)/bin/python
export PYTHON STACK VENV
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 1

# Arguments for the demo, e.g.  make demo ARGS="--loss GroupAware --epochs 5"
ARGS ?=
# Arguments for pytest, e.g.  make test PYTEST_ARGS="-k ingest"
PYTEST_ARGS ?=

.PHONY: demo test lint test-slow test-all bench setup sample-data clean pretrained bob-env chromium

setup:
	@scripts/bootstrap.sh

demo: setup
	$(PY) local_runner.py $(ARGS)

test: setup lint bob-env chromium
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Debian's chromium for the test that opens the report headless (tests/test_shipped_model.py;
# it skips without it). Installed with apt-get as root, or via passwordless sudo; quick when present.
chromium:
	@scripts/chromium.sh

# Idiap's bob.measure in its own throwaway environment (.cache/bob-env), for the test that checks
# the 1:1 figures against it (tests/test_bob_measure.py; it skips without the environment).
bob-env:
	@scripts/bob_env.sh

# ruff.toml: pyflakes, pycodestyle, sorted imports, and McCabe complexity at most 12 per function.
lint: setup
	$(VENV)/bin/ruff check .

# Tests marked slow (multi-worker training, every loss trained on the sample data): not part of
# `make test`.
test-slow: setup
	$(PY) -m pytest tests -m slow $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest tests -m "slow or not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks.run $(ARGS)

# The pretrained face-api networks (npm package, sha256-pinned) and their JS runtime, into .cache/face-api/
# (or $FFEM_FACE_API_CACHE); needs Node.js and npm. The tests run it themselves when they need it.
pretrained: setup
	$(PY) -m tools.fetch_face_api --js-runtime

sample-data: setup
	$(PY) -m tools.make_sample_data --out data/sample --seed 0

clean:
	rm -rf runs data/sample .pytest_cache
