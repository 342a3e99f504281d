# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORE   := $(VENV)/.installed-core
# The CPU build of torch (a multi-GB CUDA build is never needed on these machines).
# On a GPU box: make setup TORCH_SPEC='torch>=2.5,<2.14' EXTRAS=dev,gpu
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= dev,bench,evolve,ray,integrations
# verl's estimator registry without verl's pins (transformers<5.11, packaging<26): see pyproject.
VERL_SPEC  ?= verl==0.9.1 tensordict==0.10.0 pyvers==0.1.0
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PYTEST_ARGS ?=

.PHONY: setup test demo lint clean

# Two layers: the core install is all `make demo` needs; `make setup` / `make test` add the extras.
$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(FIND_LINKS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q $(FIND_LINKS) -e .
	touch $(CORE)

$(STAMP): pyproject.toml $(CORE)
	$(BIN)/pip install -q $(FIND_LINKS) -e ".[$(EXTRAS)]"
	$(if $(findstring integrations,$(EXTRAS)),$(BIN)/pip install -q --no-deps $(FIND_LINKS) $(VERL_SPEC))
	touch $(STAMP)

setup: $(STAMP)  ## idempotent: re-installs only when pyproject.toml changed

test: setup  ## the whole test suite (Docker tests skip, with the reason, when no engine runs)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# One torch thread unless OMP_NUM_THREADS says otherwise: on 2 shared cores two threads ran 10-15x slower.
demo: $(CORE)  ## the whole pipeline offline on CPU: prep, warm start, VPO + GRPO, evaluation, comparison
	@if docker info >/dev/null 2>&1; then $(BIN)/vpo sandbox build-image; \
	else echo "WARNING: no Docker engine answers: the demo will use the weaker PROCESS sandbox"; fi
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/vpo demo

lint: setup
	$(BIN)/ruff check components flows tests bench examples

clean:
	rm -rf $(VENV) runs mlruns .pytest_cache
