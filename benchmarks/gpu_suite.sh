#!/usr/bin/env bash
# The GPU measurements, one script (measured on an H200: the build phase under 4 minutes beside
# the gpu tests; the two pretrain-step sections about 4.5 minutes, mostly compiling):
#   1. pretraining step time, images/s and peak memory for ViT-S/16 at 224, batch 64, bf16,
#      eager vs torch.compile, for enfold (K=2, second-order) and for MAE (transformers'
#      ViTMAEForPreTraining, same encoder, MAE's 8-block 512-wide decoder);
#   2. inference latency per backend (PyTorch, TorchScript, ONNX Runtime CUDA/TensorRT providers
#      when onnxruntime-gpu is installed) for the ViT-S classifier and the K=2 restorer.
# Latency does not depend on the weights, so the checkpoints come from a few steps on digits
# upsampled to 224 (the only data that ships with the packages).
#
#   pip install -e '.[dev,bench]'        # plus onnxruntime-gpu *instead of* onnxruntime for ORT CUDA
#   bash benchmarks/gpu_suite.sh         # writes JSON and logs under runs/gpu_suite/
#   RUN_DIR=/elsewhere PY=python3 bash benchmarks/gpu_suite.sh   # other run folder or Python
#   PHASE=build ...; PHASE=time ...     # artifacts first (CPU-bound exports, nothing timed), so
#                                       # other work can share the machine then; timings alone
set -uo pipefail  # no -e: one failed section must not cost the numbers of the others
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN_DIR=${RUN_DIR:-runs/gpu_suite}
PHASE=${PHASE:-all}  # build | time | all
mkdir -p "$RUN_DIR"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')" \
  || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee "$RUN_DIR/device.txt"
"$PY" - <<'PYEOF' | tee -a "$RUN_DIR/device.txt"
import importlib
for name in ("torch", "timm", "transformers", "onnx", "onnxscript", "onnxruntime", "tensorrt"):
    try:
        mod = importlib.import_module(name)
        extra = mod.get_available_providers() if name == "onnxruntime" else ""
        print(name, mod.__version__, extra)
    except ImportError as exc:
        print(name, "not installed:", exc)
PYEOF
failed=()
section() {  # section NAME SECONDS CMD...: run with a time limit, remember failures
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" || { echo "!! $name failed (exit $?)"; failed+=("$name"); }
}

if [[ $PHASE != time ]]; then
TINY=(--set data.source=digits --set data.batch_size=8 --set data.num_workers=2
      --set eval.every=0 --set eval.num_images=16 --set train.warmup_steps=1)
section pretrain 120 "$PY" -m enfold.cli.app pretrain \
  --config configs/pretrain/imagenet-vit-small.yaml --out "$RUN_DIR/pretrain" --max-steps 3 \
  --no-compile "${TINY[@]}"
section finetune 120 "$PY" -m enfold.cli.app finetune \
  --config configs/finetune/imagenet-vit-small.yaml \
  --pretrained "$RUN_DIR/pretrain/checkpoint-last.pt" --out "$RUN_DIR/finetune" --max-steps 3 \
  --no-compile "${TINY[@]}" --set finetune.mixup=0 --set finetune.cutmix=0
# The four exports are independent and CPU-bound: run them side by side.
pids=() names=()
for fmt in onnx torchscript; do
  for target in classifier restorer; do
    ckpt=$RUN_DIR/pretrain/checkpoint-last.pt
    [[ $target == classifier ]] && ckpt=$RUN_DIR/finetune/checkpoint-last.pt
    section "export-$target-$fmt" 300 "$PY" -m enfold.cli.app export --checkpoint "$ckpt" \
      --target "$target" --steps 2 --format "$fmt" --batch 1:8:32 --out "$RUN_DIR/export" \
      --no-validate > "$RUN_DIR/export-$target-$fmt.log" 2>&1 &
    pids+=($!) names+=("export-$target-$fmt")
  done
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; tail -n 2 "$RUN_DIR/${names[$i]}.log"
  grep -q "^!! " "$RUN_DIR/${names[$i]}.log" && failed+=("${names[$i]}")
done
fi

if [[ $PHASE != build ]]; then
for method in enfold mae; do  # eager and compiled, each in its own process
  section "pretrain-step-$method" 200 "$PY" benchmarks/pretrain_step.py --method "$method" \
    --arch vit_small_patch16_224 --img-size 224 --patch-size 16 --batch 64 --bf16 \
    --device cuda --steps 10 --warmup 3 --json "$RUN_DIR/pretrain-step-$method.json"
done

for model in classifier restorer-k2; do
  section "bench-$model" 150 "$PY" -m enfold.cli.app bench --model "$RUN_DIR/export/$model.onnx" \
    --device cuda --batch 1,8,32 --seconds 2 --out "$RUN_DIR/bench-$model.json"
done
fi
echo "done: $RUN_DIR (record the numbers in docs/RESULTS.md with the device in device.txt)"
if ((${#failed[@]})); then echo "failed sections: ${failed[*]}"; exit 1; fi
