# enfold: `make demo` runs the main job end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch and torchvision are pinned as a pair: a mismatched torchvision fails to import.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup data browser demo restorers models test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv and install enfold with its dev extras

# Real data sets, installed from Debian packages with their files inside (nothing is downloaded at
# run time): Fashion-MNIST (MIT), classic test photos (opencv-doc, BSD), photographs among the
# wallpapers of lomiri-wallpapers-16.04 (CC-BY/CC-BY-SA) and plasma-workspace-wallpapers (GPL).
DATA_PACKAGES := dataset-fashion-mnist opencv-doc lomiri-wallpapers-16.04 plasma-workspace-wallpapers

data:  ## install the real data sets (needs apt and root; otherwise says what to do)
	@if dpkg -s $(DATA_PACKAGES) >/dev/null 2>&1; then \
		echo "data: $(DATA_PACKAGES) already installed"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(DATA_PACKAGES) >/dev/null && \
		echo "data: installed $(DATA_PACKAGES)"; \
	else \
		echo "data: cannot install with apt here (not Debian/Ubuntu, or not root). Either run"; \
		echo "  sudo apt-get install $(DATA_PACKAGES)"; \
		echo "or point the configs at your own files:"; \
		echo "  --set data.source=fashion-mnist:DIR  (DIR holds the four Fashion-MNIST idx files,"; \
		echo "                                        e.g. torchvision's FashionMNIST/raw)"; \
		echo "  --set data.source=folder:DIR         (any folder of your own photos)"; \
		echo "Tests that need these files skip, naming the missing package."; \
	fi

# A headless browser for tests/test_page.py (the page `enfold serve` answers GET / with), driven
# by selenium (a dev extra). `make test` runs this first and never fails on it: without apt or
# root, or offline, it says what to do and the browser tests skip.
BROWSER_PACKAGES := chromium chromium-driver

browser:  ## install headless chromium and chromedriver (needs apt and root; otherwise says what to do)
	@if command -v chromedriver >/dev/null 2>&1 && \
		{ command -v chromium || command -v chromium-browser || command -v google-chrome; } \
		>/dev/null 2>&1; then \
		echo "browser: chromium and chromedriver already installed"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		if apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; then \
			echo "browser: installed $(BROWSER_PACKAGES)"; \
		else \
			echo "browser: apt-get could not install $(BROWSER_PACKAGES) (offline?);" \
				"tests/test_page.py's browser tests skip"; \
		fi; \
	else \
		echo "browser: cannot install with apt here (not Debian/Ubuntu, or not root). Either run"; \
		echo "  sudo apt-get install $(BROWSER_PACKAGES)"; \
		echo "or put chromium (or google-chrome) and a matching chromedriver on PATH."; \
		echo "tests/test_page.py's browser tests skip, naming what is missing."; \
	fi

demo: setup  ## pretrain, fine-tune and evaluate on the embedded digits -> runs/demo/
	$(BIN)/enfold pretrain --config configs/pretrain/digits-demo.yaml --out runs/demo/pretrain
	$(BIN)/enfold visualize --checkpoint runs/demo/pretrain/checkpoint-last.pt --task mask \
		--out runs/demo/pretrain/mask.png --overwrite
	$(BIN)/enfold finetune --config configs/finetune/digits-demo.yaml --no-compile \
		--max-steps 150 --pretrained runs/demo/pretrain/checkpoint-last.pt --out runs/demo/finetune
	$(BIN)/enfold evaluate --checkpoint runs/demo/finetune/checkpoint-last.pt \
		--out runs/demo/evaluate --overwrite
	$(BIN)/enfold export --checkpoint runs/demo/finetune/checkpoint-last.pt \
		--target classifier --format onnx --out runs/demo/export --overwrite
	$(BIN)/enfold export --checkpoint runs/demo/pretrain/checkpoint-last.pt \
		--target restorer --steps 2 --format onnx --out runs/demo/export --overwrite

RESTORERS := noise sr sr4 mask-freeform gray shuffle
# mask-freeform: the mask restorer trained on free-form holes half the time (it ships as "mask");
# every restorer is exported on one patch grid: the runtime blends overlapping tiles instead

# A quick run of the same path (train, export, validate) with few steps, apart from the real runs:
#   make restorers RESTORE_STEPS=20 RESTORE_RUNS=runs/restore-smoke RESTORE_EXPORTS=exports/restorers-smoke
RESTORE_RUNS    ?= runs/restore
RESTORE_EXPORTS ?= exports/restorers
RESTORE_STEPS   ?=

restorers: setup data  ## train the shipped restorers and export each to ONNX -> exports/restorers/<task>/
	@for t in $(RESTORERS); do \
		$(BIN)/enfold pretrain --config configs/pretrain/restore-$$t.yaml --out $(RESTORE_RUNS)/$$t \
			$(if $(RESTORE_STEPS),--max-steps $(RESTORE_STEPS)) \
		&& $(BIN)/enfold export --checkpoint $(RESTORE_RUNS)/$$t/checkpoint-last.pt \
			--target restorer --format onnx --out $(RESTORE_EXPORTS)/$$t --overwrite \
			|| exit 1; \
	done

# The model zoo shipped inside the package (enfold/zoo/): every restorer's run, the Fashion-MNIST
# encoder (pretrain) and its 10-labels-per-class classifier (finetune); a finished run is read
# back, not retrained. benchmarks/build_zoo.py exports, validates and measures each, keeps fp16
# where it matches fp32, and writes enfold/zoo/registry.json and the README's table.
# The encoder is the 16-epoch run (configs/pretrain/fmnist-16ep.yaml): about 2 hours of training
# on this 2-core machine, most of what `make models` takes besides the restorers.
FMNIST_PRE := runs/zoo/fmnist-pretrain-16ep
FMNIST_FT  := runs/zoo/fmnist-finetune-16ep

models: setup data  ## retrain every shipped model from its config, then build the zoo -> enfold/zoo/
	@for t in $(RESTORERS); do \
		$(BIN)/enfold pretrain --config configs/pretrain/restore-$$t.yaml \
			--out runs/restore/$$t || exit 1; \
	done
	$(BIN)/enfold pretrain --config configs/pretrain/fmnist-16ep.yaml --out $(FMNIST_PRE)
	$(BIN)/enfold finetune --config configs/finetune/fmnist-tiny.yaml \
		--pretrained $(FMNIST_PRE)/checkpoint-last.pt --out $(FMNIST_FT)
	$(BIN)/python benchmarks/build_zoo.py

test: setup browser  ## the whole test suite (CPU, tiny models)
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check enfold tests benchmarks

bench: setup  ## compiled vs eager training step
	$(BIN)/python benchmarks/pretrain_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
