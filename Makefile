# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv in the repo root.
# torch is pinned here (a CPU wheel on this machine's disk); the package itself asks for a range, torch>=2.2.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/vaelab train --model ae --data mnist5k --epochs 10 --out $(DEMO)/ae --seed 0 --quiet
	$(BIN)/vaelab train --model vae --data mnist5k --epochs 10 --out $(DEMO)/vae --seed 0 --quiet
	$(BIN)/vaelab sample $(DEMO)/ae -n 64 -o $(DEMO)/ae_samples.png
	$(BIN)/vaelab sample $(DEMO)/vae -n 64 -o $(DEMO)/vae_samples.png
	$(BIN)/vaelab reconstruct $(DEMO)/ae -o $(DEMO)/ae_recon.png
	$(BIN)/vaelab reconstruct $(DEMO)/vae -o $(DEMO)/vae_recon.png
	# Reuses the two runs above (same configuration), trains beta-VAE(4) beside them, evaluates all three.
	$(BIN)/vaelab compare --data mnist5k --models ae,vae,beta-vae:4 --epochs 10 --out $(DEMO) --quiet

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/iwae_speed.py --data mnist5k --k 1000

clean:
	rm -rf $(VENV) runs
