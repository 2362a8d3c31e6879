# The README names these targets. Everything installs into $(VENV).
VENV       ?= .venv
PYTHON     ?= python3
DATA_DIR   ?= ../shared/data
MODEL      ?= food-v1
# Snapshots are tied to the model that built them: one index dir per model.
INDEX_DIR  ?= var/index-$(MODEL)
BOOTSTRAP  ?= $(DATA_DIR)/kfood
BOOTSTRAP_FORMAT ?= kfood
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed

BUNDLE     ?= var/bundles/food
BUNDLE_INDEX_DIR ?= var/index-bundle
SHIPPED    ?= models/weights/food-v1
SEED       ?= 0
TRAIN_SOURCES ?= --dataset kfood --data-dir $(DATA_DIR)/kfood \
                 --dataset food101 --data-dir $(DATA_DIR)/food101-10 \
                 --dataset flickr --data-dir $(DATA_DIR)/flickr8k

FOOD101_DIR ?= $(DATA_DIR)/food101-10
FOOD101_SEED ?= 0
FOOD101_MEMBER = var/bundles/food101-s$(FOOD101_SEED)
# What the members share; each adds its own tuning recipe.
FOOD101_TRAIN = $(BIN)/mmsearch train --dataset food101 --data-dir $(FOOD101_DIR) --views 3 \
  --seed $(FOOD101_SEED) --image-size 256
FOOD101_BUNDLE ?= var/bundles/food101-s$(FOOD101_SEED)-ens-256

.PHONY: install run index test test-fast lint format bench-synthetic clean bundle ship \
        run-bundle eval bundle-food101

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the project metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Serve on the embedded defaults: the shipped trained model (food-v1), in-process
# jobs, a first snapshot of the kfood sample built on the first run.
run: install
	@if [ ! -f "$(INDEX_DIR)/CURRENT" ]; then \
	  echo "No snapshot in $(INDEX_DIR): indexing $(BOOTSTRAP) (first run only)"; \
	  MMSEARCH_MODEL=$(MODEL) $(BIN)/mmsearch index "$(BOOTSTRAP)" --format $(BOOTSTRAP_FORMAT) \
	    --index-dir "$(INDEX_DIR)"; \
	fi
	MMSEARCH_MODEL=$(MODEL) MMSEARCH_INDEX_DIR="$(INDEX_DIR)" $(BIN)/mmsearch serve

# Rebuild the shipped model from the data, seeded: train the joint model (heads, recipe
# encoder, fusion) on the three samples after fine-tuning the image tower's last stages
# on the labelled photos (the validation split, 20 %, seed 0, early-stops it and is never
# trained on), export it as float16 into $(SHIPPED), fit its confidence curves on the
# validation split and measure it there. About 60 min on 2 CPU cores.
bundle: install
	@if [ -f "$(BUNDLE)/bundle.json" ]; then rm -rf "$(BUNDLE)"; fi
	$(BIN)/mmsearch train $(TRAIN_SOURCES) --triplet-weight 0.5 --views 3 --tune-tower-epochs 6 \
	  --seed $(SEED) --out $(BUNDLE)
	$(MAKE) ship

# Export, calibrate and measure an already trained $(BUNDLE) as the shipped model.
ship: install
	rm -rf "$(SHIPPED)"
	$(BIN)/mmsearch export --model $(BUNDLE) --out $(SHIPPED)
	mkdir -p var/bench
	$(BIN)/mmsearch calibrate --model $(SHIPPED) --seed $(SEED) $(TRAIN_SOURCES) \
	  --json var/bench/food-v1-trust.json
	$(BIN)/mmsearch eval --model $(SHIPPED) --dataset kfood --data-dir $(DATA_DIR)/kfood --split val \
	  --seed $(SEED) --json var/bench/food-v1-kfood.json
	$(BIN)/mmsearch eval --model $(SHIPPED) --dataset flickr --data-dir $(DATA_DIR)/flickr8k \
	  --split val --seed $(SEED) --json var/bench/food-v1-flickr.json
	$(BIN)/mmsearch eval --model $(SHIPPED) --dataset food101 --data-dir $(DATA_DIR)/food101-10 \
	  --split val --seed $(SEED) --json var/bench/food-v1-food101.json
	@echo "Pin the fingerprint printed by 'mmsearch export' in models/registry.py SHIPPED_MODELS."

# The best food101 classifier measured (README, Benchmarks): three food101-only bundles
# whose image towers were tuned differently (plain, 6 epochs; mixup 0.4, 10 epochs;
# mixup 0.2, 8 epochs), photos embedded at 256 px, joined into one ensemble.
# About 55 min on 2 CPU cores, the val evaluation included.
bundle-food101: install
	$(FOOD101_TRAIN) --tune-tower-epochs 6 --out $(FOOD101_MEMBER)-tuned-256
	$(FOOD101_TRAIN) --tune-tower-epochs 10 --tune-tower-mixup 0.4 --out $(FOOD101_MEMBER)-mix10-256
	$(FOOD101_TRAIN) --tune-tower-epochs 8 --tune-tower-mixup 0.2 --out $(FOOD101_MEMBER)-mix8b-256
	@if [ -f "$(FOOD101_BUNDLE)/bundle.json" ]; then rm -rf "$(FOOD101_BUNDLE)"; fi
	$(BIN)/mmsearch ensemble --member $(FOOD101_MEMBER)-tuned-256 \
	  --member $(FOOD101_MEMBER)-mix10-256 --member $(FOOD101_MEMBER)-mix8b-256 \
	  --out $(FOOD101_BUNDLE)
	mkdir -p var/bench
	$(BIN)/mmsearch eval --model $(FOOD101_BUNDLE) --dataset food101 --data-dir $(FOOD101_DIR) \
	  --split val --seed $(FOOD101_SEED) --json var/bench/food101-s$(FOOD101_SEED)-val-ensemble.json

# Serve with the trained bundle (its own index dir: snapshots are tied to a model).
run-bundle: install
	@if [ ! -f "$(BUNDLE)/bundle.json" ]; then $(MAKE) bundle; fi
	@if [ ! -f "$(BUNDLE_INDEX_DIR)/CURRENT" ]; then \
	  MMSEARCH_MODEL=bundle:$(BUNDLE) $(BIN)/mmsearch index "$(BOOTSTRAP)" --format $(BOOTSTRAP_FORMAT) --index-dir "$(BUNDLE_INDEX_DIR)"; \
	fi
	MMSEARCH_MODEL=bundle:$(BUNDLE) MMSEARCH_INDEX_DIR="$(BUNDLE_INDEX_DIR)" $(BIN)/mmsearch serve

# The validation-split figures of the README (same fraction and seed as training).
eval: install
	mkdir -p var/bench
	$(BIN)/mmsearch eval --model $(BUNDLE) --dataset kfood --data-dir $(DATA_DIR)/kfood --split val --json var/bench/kfood-val-bundle.json
	$(BIN)/mmsearch eval --model offline --dataset kfood --data-dir $(DATA_DIR)/kfood --split val --json var/bench/kfood-val-offline.json
	$(BIN)/mmsearch eval --model $(BUNDLE) --dataset flickr --data-dir $(DATA_DIR)/flickr8k --split val --json var/bench/flickr-val-bundle.json
	$(BIN)/mmsearch eval --model offline --dataset flickr --data-dir $(DATA_DIR)/flickr8k --split val --json var/bench/flickr-val-offline.json
	$(BIN)/mmsearch eval --model $(BUNDLE) --dataset food101 --data-dir $(DATA_DIR)/food101-10 --split val --json var/bench/food101-val-bundle.json
	$(BIN)/mmsearch eval --model offline --dataset food101 --data-dir $(DATA_DIR)/food101-10 --split val --json var/bench/food101-val-offline.json

index: install
	$(BIN)/mmsearch index "$(BOOTSTRAP)" --format $(BOOTSTRAP_FORMAT) --index-dir "$(INDEX_DIR)"

lint: install
	$(BIN)/ruff check models index service training tests scripts
	$(BIN)/ruff format --check models index service training tests scripts
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix models index service training tests scripts
	$(BIN)/ruff format models index service training tests scripts

test: install lint
	MMSEARCH_SHARED_DATA="$(abspath $(DATA_DIR))" $(BIN)/pytest -q

# The unit tests: no end-to-end processes, nothing marked slow (training runs, the real
# offline model; tests/conftest.py marks the tests that load it). Under 2 min here.
test-fast: install
	MMSEARCH_SHARED_DATA="$(abspath $(DATA_DIR))" $(BIN)/pytest -q -m "not e2e and not slow"

bench-synthetic: install
	$(BIN)/mmsearch bench synthetic --seeds 5 --json var/bench/synthetic.json

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
