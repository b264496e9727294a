# twostage — developer and operator entry points. Every target depends on `install`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
# Extras `make install` installs; `make lock` pins exactly these (plus torch and pip).
EXTRAS ?= export,train,dev
# Every transitive version `make install` installs, pinned (pip constraints). `make lock` writes it.
LOCK ?= requirements.lock
LOCK_ARGS ?=
CONSTRAINTS = $(if $(wildcard $(LOCK)),-c $(LOCK))
MODELS_DIR ?= models
DATA_DIR ?= data
# Retrieval set (BEIR layout, with qrels/train.tsv) the offline default reranker is trained on.
RERANKER_TRAIN_DATA ?= ../shared/data/scifact
LISTEN ?= 127.0.0.1:50051
PYTEST_ARGS ?=
# Examples per RPC (and per kind: messages, raw bytes) of the long fuzz in `make reliability`.
FUZZ_EXAMPLES ?= 300
comma := ,

export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install lock serve models reranker test lint bench reliability docker-check clean

install: $(STAMP)

# torch first, pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build. Every
# install takes its versions from $(LOCK) (constraints: a package the lock does not name, e.g. one
# just added to pyproject.toml, installs unpinned until `make lock` runs).
$(STAMP): pyproject.toml $(wildcard $(LOCK))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install -q $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip check
	@touch $(STAMP)

# Pin again what `make install` installs (pyproject.toml's dependencies and $(EXTRAS), $(TORCH_SPEC),
# pip) with pip-compile, through pip's own index configuration (no index is written into the lock).
# Versions already in $(LOCK) are kept where they still fit; `make lock LOCK_ARGS=--upgrade` moves
# everything to the newest release, `LOCK_ARGS="--upgrade-package NAME"` one package.
lock: install
	printf '%s\n' "$(TORCH_SPEC)" pip | $(BIN)/pip-compile --quiet --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host --no-header \
		$(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) $(LOCK_ARGS) \
		--output-file $(LOCK) pyproject.toml -
	@sed -i '1i # Pinned versions of everything `make install` installs. Regenerate: make lock\n# (LOCK_ARGS=--upgrade for newest releases). Do not edit by hand.' $(LOCK)

# The main job on offline defaults: make the default bundles once (export the bi-encoder, train and
# export the reranker), then serve both stages on $(LISTEN). Later starts reuse the bundles.
serve: install
	$(BIN)/twostage serve --listen $(LISTEN) --models-dir $(MODELS_DIR) --data-dir $(DATA_DIR) \
		--reranker-train-data $(RERANKER_TRAIN_DATA)

# Only make the default bundles (what `serve` does first).
models: install
	$(BIN)/twostage serve --models-dir $(MODELS_DIR) --reranker-train-data $(RERANKER_TRAIN_DATA) \
		--prepare-only

# Train and export the offline default reranker from scratch (ignores the cache).
reranker: install
	$(BIN)/twostage serve --models-dir $(MODELS_DIR) --reranker-train-data $(RERANKER_TRAIN_DATA) \
		--prepare-only --retrain-reranker

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy server clients

bench: install
	$(BIN)/python bench/bench_embed.py
	$(BIN)/python bench/bench_server.py --models-dir $(MODELS_DIR) \
		--reranker-train-data $(RERANKER_TRAIN_DATA)

# The re-runnable guarantees: SIGKILL loop during upserts (>= 20 kills), an open-loop burst at 2.5x
# the measured capacity (60 s per workload), and the long property-based fuzz of every RPC. Results
# in bench/results/reliability-*-cpu.json.
reliability: install
	$(BIN)/python bench/reliability_killloop.py
	$(BIN)/python bench/reliability_burst.py
	$(BIN)/python bench/reliability_fuzz.py --examples $(FUZZ_EXAMPLES)
	$(BIN)/python bench/reliability_largest.py

# Build Dockerfile.gpu for real with a private Docker engine and run the image on the CPU
# (health probe + a real Embed call). Skips with a message where the engine cannot run.
docker-check: install
	PYTHON=$(BIN)/python bash deploy/docker/check.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
