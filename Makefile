# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first (idempotent).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
EXTRAS  := all,dev

.PHONY: setup demo demo-sds test bench gpu-check docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@# Debian chromium + chromedriver drive the dashboard tests; without them (no root, no apt) those tests skip.
	command -v chromedriver >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "chromium not installed: the browser tests will be skipped"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(BIN)/runforge train voxel --preset demo --out runs/voxel-demo --overwrite
	$(BIN)/runforge show runs/voxel-demo

# SDS from a ground plane with the voxel prior trained here (~10 CPU minutes, once) toward "a pond with a sand rim".
demo-sds: setup
	test -f runs/voxel-prior/model_index.json || $(BIN)/runforge data voxel-prior runs/voxel-prior
	$(BIN)/runforge train voxel --preset prior_sds --prompt "a pond with a sand rim" --model_path runs/voxel-prior \
	  --out runs/voxel-sds-demo --overwrite --no_export
	$(BIN)/runforge show runs/voxel-sds-demo

test: setup
	$(BIN)/python -m pytest -q -n 2

# Every bench runs, also after one fails; a table of exit codes and seconds closes, exit 1 if any failed.
# BENCH="import_and_read log_overhead" runs only those.
bench: setup
	$(BIN)/python bench/run_all.py $(BENCH)

# Every trainer for a short while on CUDA, one table (README.md, Benchmarks). Exit 3: no GPU here.
gpu-check: setup
	$(BIN)/python scripts/gpu_check.py

docs: setup
	$(BIN)/python scripts/update_docs.py

clean:
	rm -rf $(VENV) runs maps
