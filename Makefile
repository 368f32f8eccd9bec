# enfold: `make demo` runs the main job end to end; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch and torchvision are pinned as a pair: a mismatched torchvision fails to import.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv and install enfold with its dev extras

demo: setup  ## pretrain, fine-tune and evaluate on the embedded digits -> runs/demo/
	$(BIN)/enfold pretrain --config configs/pretrain/digits-tiny.yaml --out runs/demo/pretrain
	$(BIN)/enfold visualize --checkpoint runs/demo/pretrain/checkpoint-last.pt --task mask \
		--out runs/demo/pretrain/mask.png
	$(BIN)/enfold finetune --config configs/finetune/digits-tiny.yaml --no-compile \
		--max-steps 150 --pretrained runs/demo/pretrain/checkpoint-last.pt --out runs/demo/finetune
	$(BIN)/enfold evaluate --checkpoint runs/demo/finetune/checkpoint-last.pt \
		--out runs/demo/evaluate
	$(BIN)/enfold export --checkpoint runs/demo/finetune/checkpoint-last.pt \
		--target classifier --format onnx --out runs/demo/export
	$(BIN)/enfold export --checkpoint runs/demo/pretrain/checkpoint-last.pt \
		--target restorer --steps 2 --format onnx --out runs/demo/export

test: setup  ## the whole test suite (CPU, tiny models)
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check enfold tests benchmarks

bench: setup  ## compiled vs eager training step
	$(BIN)/python benchmarks/pretrain_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
