# The README names these targets. Everything installs into $(VENV).
VENV       ?= .venv
PYTHON     ?= python3
DATA_DIR   ?= ../shared/data
INDEX_DIR  ?= var/index
BOOTSTRAP  ?= $(DATA_DIR)/kfood
BOOTSTRAP_FORMAT ?= kfood
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed

.PHONY: install run index test lint format bench-synthetic clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Serve on the embedded defaults: offline encoder, in-process jobs, a first
# snapshot of the kfood sample built on the first run.
run: install
	@if [ ! -f "$(INDEX_DIR)/CURRENT" ]; then \
	  echo "No snapshot in $(INDEX_DIR): indexing $(BOOTSTRAP) (first run only)"; \
	  $(BIN)/mmsearch index "$(BOOTSTRAP)" --format $(BOOTSTRAP_FORMAT) --index-dir "$(INDEX_DIR)"; \
	fi
	MMSEARCH_INDEX_DIR="$(INDEX_DIR)" $(BIN)/mmsearch serve

index: install
	$(BIN)/mmsearch index "$(BOOTSTRAP)" --format $(BOOTSTRAP_FORMAT) --index-dir "$(INDEX_DIR)"

lint: install
	$(BIN)/ruff check models index service tests
	$(BIN)/ruff format --check models index service tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix models index service tests
	$(BIN)/ruff format models index service tests

test: install lint
	MMSEARCH_SHARED_DATA="$(abspath $(DATA_DIR))" $(BIN)/pytest -q

bench-synthetic: install
	$(BIN)/mmsearch bench synthetic --seeds 5 --json var/bench/synthetic.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
