# Two entrypoints on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install the project pinned by constraints.txt:
# `make demo` what the demo needs (emodistill[all]), `make test` the test tools on top.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-all
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean serve tune-demo cv-demo schemas

$(DEMO_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[all]"
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/emodistill demo

test: $(STAMP)
	$(BIN)/python -m pytest

# a Ray Tune sweep of the loss weights on the demo corpus; everything under runs/tune-demo/
tune-demo: $(DEMO_STAMP)
	rm -rf runs/tune-demo
	$(BIN)/emodistill synth runs/tune-demo/corpus
	$(BIN)/emodistill ingest runs/tune-demo/corpus runs/tune-demo/data --folds 4
	$(BIN)/emodistill tune --config jobs/configs/tune_demo_cpu.yaml

# the honest protocol on the demo corpus: each of the 4 folds tested once, selection on
# speakers carved from the other folds, test UAR per exit (mean ± sd) against the eGeMAPS
# floor; everything under runs/cv-demo/ (cv.md, cv.json)
cv-demo: $(DEMO_STAMP)
	rm -rf runs/cv-demo
	$(BIN)/emodistill synth runs/cv-demo/corpus
	$(BIN)/emodistill ingest runs/cv-demo/corpus runs/cv-demo/data --folds 4
	$(BIN)/emodistill train --config jobs/configs/demo_cpu.yaml --folds all data.dataset=runs/cv-demo/data \
		run.storage_path=runs/cv-demo/ray run.export_dir=runs/cv-demo/cv

# the JSON Schemas of the config files (schemas/*.schema.json), from the pydantic models
schemas: $(DEMO_STAMP)
	$(BIN)/emodistill config schema --out schemas

# serve runs/demo/checkpoint (from `make demo`) on 127.0.0.1:8000 until Ctrl-C
serve: $(DEMO_STAMP)
	$(BIN)/serve run serve_configs/local.yaml

clean:
	rm -rf runs/demo runs/tune-demo runs/cv-demo
