# Two entrypoints on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and install the project pinned by constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean serve

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/emodistill demo

test: $(STAMP)
	$(BIN)/python -m pytest

# serve runs/demo/checkpoint (from `make demo`) on 127.0.0.1:8000 until Ctrl-C
serve: $(STAMP)
	$(BIN)/serve run serve_configs/local.yaml

clean:
	rm -rf runs/demo
