# The two commands of the README's quick start: `make demo` and `make test`.
# Both create .venv with Python 3.11 and install what they need into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output
# torch is only needed by the tests (gradient references); the pinned CPU wheel comes first so
# the project's torch range does not pull a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test test-gpu fuzz install install-dev bench-io bench-rd bench-mlp bench-mlp-tail bench-mlp-predictor bench-mlp-shared bench-mlp-shared-2000 bench-neural-default bench-e2e bench-restart bench-speed bench-runtime bench-scaling clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# dev: the test tools; mpi: mpi4py and MPICH, for the tests that run real MPI jobs
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
	$(BIN)/python -m pip install --quiet -e ".[dev,mpi]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# synthesize a 100-cell restart, compress it, restore it, compare the restored file with the original
demo: install
	mkdir -p $(DEMO_DIR)
	$(BIN)/vdfzip synth $(DEMO_DIR)/restart.vlsv --cells 100 --seed 1 --force
	$(BIN)/vdfzip encode $(DEMO_DIR)/restart.vlsv --tol 1e-2 --force
	$(BIN)/vdfzip decode $(DEMO_DIR)/restart.vdfz.vlsv --force
	$(BIN)/vdfzip verify $(DEMO_DIR)/restart.vlsv $(DEMO_DIR)/restart.decoded.vlsv

test: install-dev
	$(BIN)/python -m pytest -q

# on a GPU node: the neural codec's cupy and CUDA paths against the CPU (tests/test_gpu.py)
test-gpu: install-dev
	$(BIN)/python -m pip install --quiet -e ".[gpu]"
	NUMBA_ENABLE_CUDASIM=0 $(BIN)/python -m pytest -q -m gpu

# coverage-guided fuzzing of the VLSV parser, the vdfzip layout and the payload decoders
# (fuzz/fuzz_decoders.py); FUZZ_SECONDS of it, the result in fuzz/RESULTS.md
FUZZ_SECONDS ?= 600
fuzz: install-dev
	$(BIN)/python -m pip install --quiet -e ".[fuzz]"
	$(BIN)/python fuzz/fuzz_decoders.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 fuzz/corpus

bench-io: install
	$(BIN)/python bench/io.py --repeat 2 --markdown bench/RESULTS-io.md

bench-rd: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/rate_distortion.py

bench-restart: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/restart_profile.py

bench-mlp: install-dev
	$(BIN)/python bench/mlp_fit.py

# issue 16's tail-aware loss variants for the neural field (torch autograd, 72 restart cells)
bench-mlp-tail: install-dev
	$(BIN)/python bench/mlp_tail_loss.py ../shared/data/restart_ipshock_small.vlsv --markdown bench/RESULTS-mlp-tail-loss.md

# issue 16's neural field as the octree codec's predictor (72 restart cells, restart and core profiles)
bench-mlp-predictor: install-dev
	$(BIN)/python bench/mlp_predictor.py ../shared/data/restart_ipshock_small.vlsv --markdown bench/RESULTS-mlp-predictor.md

# issue 16's shared decoder with per-cell latents (72 restart cells and 2000 synthetic ones)
bench-mlp-shared: install-dev
	$(BIN)/python bench/mlp_shared_decoder.py ../shared/data/restart_ipshock_small.vlsv --synth-cells 2000 --steps 600 \
		--markdown bench/RESULTS-mlp-shared-decoder.md

# the same on 2000 synthetic cells at ~530 updates per latent: one process per latent, ~40 min each
SYNTH_2000 := /tmp/vdfzip-synth-2000.vlsv
bench-mlp-shared-2000: install-dev
	$(BIN)/vdfzip synth $(SYNTH_2000) --cells 2000 --seed 1 --force
	$(BIN)/python bench/mlp_shared_decoder.py $(SYNTH_2000) --steps 16600 --latents 8 & \
		$(BIN)/python bench/mlp_shared_decoder.py $(SYNTH_2000) --steps 16600 --latents 32 && wait $$!

# issue 16's scoreboard: octree, mlp,octree and auto against ZFP and SZ3 in both profiles, one run
bench-neural-default: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/neural_default.py

bench-e2e: install
	$(BIN)/python bench/end_to_end.py --markdown bench/RESULTS-e2e.md

# encode/decode MB/s of vdfzip (default, --profile core, --method lossless) beside ZFP and SZ3
bench-speed: install
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/speed.py --markdown bench/RESULTS-speed.md

# warm-started against cold neural fits in the toy simulation of examples/runtime_loop.py
bench-runtime: install
	$(BIN)/python bench/runtime.py --markdown bench/RESULTS-runtime.md

# encode and decode of a 1 GB synthetic restart on 1 and 2 MPI ranks; the 6 TiB model
bench-scaling: install-dev
	$(BIN)/python bench/scaling.py --gigabytes 1 --markdown bench/RESULTS-scaling.md

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
