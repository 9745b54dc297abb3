# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv in the repo root.
# torch is pinned here (a CPU wheel on this machine's disk); the package itself asks for a range, torch>=2.4.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: install system-deps demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	# The pin again, so that no requirement of the package or its extras can swap the torch installed above.
	$(BIN)/python -m pip install -q -e '.[test]' $(TORCH)
	touch $(STAMP)

install: $(STAMP)

# Chromium, its font and Debian's Fashion-MNIST for the tests: installed as root, else the command is named.
system-deps:
	.ci/system-deps

demo: install
	rm -rf $(DEMO)
	# AE, VAE and beta-VAE(4) with the lecture's network on mnist5k: same data, seed and budget, then evaluated.
	$(BIN)/vaelab compare --data mnist5k --models ae,vae,beta-vae:4 --epochs 10 --out $(DEMO) --quiet
	$(BIN)/vaelab sample $(DEMO)/ae -n 64 -o $(DEMO)/ae_samples.png
	$(BIN)/vaelab sample $(DEMO)/vae -n 64 -o $(DEMO)/vae_samples.png
	$(BIN)/vaelab reconstruct $(DEMO)/ae -o $(DEMO)/ae_recon.png
	$(BIN)/vaelab reconstruct $(DEMO)/vae -o $(DEMO)/vae_recon.png
	# The lecture's pictures need a 2-D latent: the same two models with z_dim = 2.
	$(BIN)/vaelab train --model ae --z-dim 2 --data mnist5k --epochs 10 --seed 0 --out $(DEMO)/ae-2d --quiet
	$(BIN)/vaelab train --model vae --z-dim 2 --data mnist5k --epochs 10 --seed 0 --out $(DEMO)/vae-2d --quiet
	$(BIN)/vaelab evaluate $(DEMO)/ae-2d --quiet > /dev/null
	$(BIN)/vaelab evaluate $(DEMO)/vae-2d --quiet > /dev/null
	$(BIN)/vaelab plot latent $(DEMO)/ae-2d $(DEMO)/vae-2d -o $(DEMO)/latent_2d.png
	$(BIN)/vaelab plot posterior $(DEMO)/vae-2d -o $(DEMO)/posterior.png
	$(BIN)/vaelab plot manifold $(DEMO)/ae-2d $(DEMO)/vae-2d -o $(DEMO)/manifold.png
	$(BIN)/vaelab plot samples $(DEMO)/ae $(DEMO)/vae -o $(DEMO)/samples.png
	# One colour model: the lecture's VAE on the generated shapes set (drawn at 32x32 RGB), so the report shows
	# the pictures on colour images too.
	$(BIN)/vaelab train --model vae --data shapes --image-size 32 --z-dim 8 --epochs 3 --seed 0 --out $(DEMO)/vae-shapes --quiet
	$(BIN)/vaelab sample $(DEMO)/vae-shapes -n 64 -o $(DEMO)/shapes_samples.png
	$(BIN)/vaelab report $(DEMO) $(DEMO)/ae-2d $(DEMO)/vae-2d $(DEMO)/vae-shapes -o $(DEMO)/report.html
	@echo "demo done: open $(DEMO)/report.html; the comparison is in $(DEMO)/comparison.md"

test: system-deps install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/step_breakdown.py
	$(BIN)/python benchmarks/eager_floor.py
	$(BIN)/python benchmarks/iwae_speed.py --data mnist5k --k 1000
	$(BIN)/python benchmarks/image_folder.py --n 10000 --steps 20
	$(BIN)/python benchmarks/ddp_overhead.py
	$(BIN)/python benchmarks/gpu_speed.py
	$(BIN)/python benchmarks/families.py --out runs/families

clean:
	rm -rf $(VENV) runs
