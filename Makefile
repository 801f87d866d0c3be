# The two commands: `make demo` (set up, run the whole graph on the sample media) and
# `make test` (set up, run the test suite). `make dev` opens the Dagster UI.
SHELL := /bin/bash
SHARED ?= $(abspath $(CURDIR)/../shared)
SAMPLES ?= $(SHARED)/media/grid
PY := .venv/bin/python

# Model directory: an explicit TALKINGHEAD_MODEL_DIR wins, else ../shared/models when present.
ifeq ($(origin TALKINGHEAD_MODEL_DIR), undefined)
  ifneq ($(wildcard $(SHARED)/models),)
    export TALKINGHEAD_MODEL_DIR := $(SHARED)/models
  endif
endif
export TALKINGHEAD_SHARED_DIR := $(SHARED)
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: setup demo test dev models bench clean labelstudio labelstudio-stop

setup:
	@bash scripts/setup.sh
	@mkdir -p $(DAGSTER_HOME)
	@[ -f $(DAGSTER_HOME)/dagster.yaml ] || printf 'telemetry:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml

demo: setup
	TALKINGHEAD_INPUT_DIR=$(SAMPLES) TALKINGHEAD_DATA_DIR=$(CURDIR)/data/demo $(PY) -m assets.demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

dev: setup
	TALKINGHEAD_INPUT_DIR=$(SAMPLES) TALKINGHEAD_DATA_DIR=$(CURDIR)/data/demo \
	  .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

labelstudio: setup
	TALKINGHEAD_DATA_DIR=$(CURDIR)/data/demo $(PY) -m annotation server start

labelstudio-stop: setup
	TALKINGHEAD_DATA_DIR=$(CURDIR)/data/demo $(PY) -m annotation server stop

models: setup
	$(PY) -m pipelines models status

bench: setup
	$(PY) bench/bench_pipeline.py $(SAMPLES)
	$(PY) bench/bench_speech.py
	$(PY) bench/bench_asd.py

clean:
	rm -rf data/demo .dagster_home
