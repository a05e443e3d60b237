# Two commands do all the set-up: `make run` and `make test`. Both create .venv in the checkout (unless a
# virtual environment is already active), install the pinned dependencies once, and reinstall only when
# setup.py changes, so a second call is fast.
PYTHON_FOR_VENV ?= python3.11
ifdef VIRTUAL_ENV
  VENV := $(VIRTUAL_ENV)
else
  VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.openmm_accel-installed

.PHONY: setup run test bench clean-venv

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml
	@test -x $(PY) || $(PYTHON_FOR_VENV) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: setup
	$(VENV)/bin/openmm-accel run $(ARGS)

test: setup
	$(PY) -m pytest -q -n 2 tests $(ARGS)

bench: setup
	$(VENV)/bin/openmm-accel bench models --json bench-models.json

clean-venv:
	rm -rf .venv
