# twostage — developer and operator entry points. Every target depends on `install`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0
MODELS_DIR ?= models
DATA_DIR ?= data
# Retrieval set (BEIR layout, with qrels/train.tsv) the offline default reranker is trained on.
RERANKER_TRAIN_DATA ?= ../shared/data/scifact
LISTEN ?= 127.0.0.1:50051
PYTEST_ARGS ?=

export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install serve models reranker test lint bench docker-check clean

install: $(STAMP)

# torch first, pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[export,train,dev]"
	$(BIN)/python -m pip check
	@touch $(STAMP)

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

# Build Dockerfile.gpu for real with a private Docker engine and run the image on the CPU
# (health probe + a real Embed call). Skips with a message where the engine cannot run.
docker-check: install
	PYTHON=$(BIN)/python bash deploy/docker/check.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
