#!/usr/bin/env bash
# The GPU measurements, one script, sized for one H100 in under 8 minutes:
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
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/gpu_suite}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"

for method in enfold mae; do  # each mode in its own process; about 1 min per method
  timeout 240 "$PY" benchmarks/pretrain_step.py --method "$method" \
    --arch vit_small_patch16_224 --img-size 224 --patch-size 16 --batch 64 --bf16 \
    --device cuda --steps 10 --warmup 3 --json "$OUT/pretrain-step-$method.json"
done

TINY=(--set data.source=digits --set data.batch_size=8 --set data.num_workers=2
      --set eval.every=0 --set eval.num_images=16 --set train.warmup_steps=1)
"$PY" -m enfold.cli.app pretrain --config configs/pretrain/imagenet-vit-small.yaml \
  --out "$OUT/pretrain" --max-steps 3 --no-compile "${TINY[@]}"
"$PY" -m enfold.cli.app finetune --config configs/finetune/imagenet-vit-small.yaml \
  --pretrained "$OUT/pretrain/checkpoint-last.pt" --out "$OUT/finetune" --max-steps 3 \
  --no-compile "${TINY[@]}" --set finetune.mixup=0 --set finetune.cutmix=0
for fmt in onnx torchscript; do
  "$PY" -m enfold.cli.app export --checkpoint "$OUT/finetune/checkpoint-last.pt" \
    --target classifier --format "$fmt" --out "$OUT/export" --no-validate
  "$PY" -m enfold.cli.app export --checkpoint "$OUT/pretrain/checkpoint-last.pt" \
    --target restorer --steps 2 --format "$fmt" --batch 1:8:32 --out "$OUT/export" --no-validate
done
for model in classifier restorer-k2; do
  timeout 150 "$PY" -m enfold.cli.app bench --model "$OUT/export/$model.onnx" --device cuda \
    --batch 1,8,32 --seconds 2 --out "$OUT/bench-$model.json" | tee "$OUT/bench-$model.txt"
done
echo "done: $OUT (record the numbers in docs/RESULTS.md with the device in $OUT/device.txt)"
