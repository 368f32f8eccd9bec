"""Eager vs compiled pretraining step: time per step and peak memory, side by side in one run.

    python benchmarks/pretrain_step.py                      # ViT-Tiny, 32x32, patch 4, batch 32
    python benchmarks/pretrain_step.py --arch vit_small_patch16_224 --img-size 224 \
        --patch-size 16 --batch 64 --bf16                   # on a GPU
    python benchmarks/pretrain_step.py --method mae ...     # the MAE baseline (transformers)

Each mode runs in its own child process so that one mode's memory and compile caches do not
colour the other's numbers. A step is the full training step: K-step restoration with its
second-order backward, gradient clipping and the AdamW update.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from queue import Empty


def _proc_status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM: peak resident, VmRSS: current), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_mode(args: argparse.Namespace, compiled: bool, queue: mp.Queue) -> None:
    import torch

    from enfold.config import load_config
    from enfold.model import build_energy_model
    from enfold.pipeline.distributed import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    overrides = [f"model.arch={args.arch}", f"model.img_size={args.img_size}",
                 f"model.patch_size={args.patch_size}", f"model.steps={args.k}"]
    if args.depth:
        overrides.append(f"model.depth={args.depth}")
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    if args.method == "mae":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from vs_mae import mae_model

        # MAE's own recipe at this scale: 8-block 512-wide decoder, normalised-pixel loss
        model = mae_model(cfg, decoder=(512, 8, 16), norm_pix=True).to(device).train()
    else:
        model = build_energy_model(cfg).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    step_fn = torch.compile(model) if compiled else model
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.img_size, args.img_size)
    clean = (torch.rand(shape, generator=g) * 2 - 1).to(device)
    weight = (torch.rand((args.batch, 1, args.img_size, args.img_size), generator=g) > 0.5)
    weight = weight.float().to(device)
    corrupted = clean * (1 - weight)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step() -> float:
        with autocast:
            if args.method == "mae":  # masks 75 % itself; the loss is on the masked patches
                loss = step_fn(pixel_values=clean).loss
            else:
                loss, _ = step_fn(corrupted, clean, weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = _proc_status_mib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    step()  # includes compilation for the compiled mode
    sync()
    first = time.perf_counter() - t0
    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "cuda max_memory_allocated"
    else:
        peak = _proc_status_mib("VmHWM") - rss_before
        peak_kind = "peak RSS growth"
    queue.put({"mode": "compiled" if compiled else "eager", "first_step_s": first,
               "step_s": statistics.median(times), "images_per_s": args.batch /
               statistics.median(times), "peak_mib": peak, "peak_kind": peak_kind,
               "device": str(device), "torch": torch.__version__,
               "threads": torch.get_num_threads()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=["enfold", "mae"], default="enfold",
                        help="enfold's energy step, or transformers' ViTMAEForPreTraining "
                             "with the same encoder (pip install 'enfold[bench]')")
    parser.add_argument("--arch", default="vit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--depth", type=int, default=0, help="0: the architecture's depth")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=2, help="restoration steps")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    print(f"{args.method}: {args.arch} img {args.img_size} patch {args.patch_size} "
          f"batch {args.batch} K={args.k} bf16={args.bf16}", flush=True)
    print(f"{'mode':<10}{'first step s':>14}{'step s':>10}{'img/s':>10}{'peak MiB':>11}",
          flush=True)
    results = []
    for compiled in (False, True):
        queue = ctx.Queue()
        proc = ctx.Process(target=run_mode, args=(args, compiled, queue))
        proc.start()
        while True:  # a child that dies (out of memory, compiler crash) must not hang us
            try:
                r = queue.get(timeout=5)
                break
            except Empty:
                if not proc.is_alive():
                    sys.exit(f"the {'compiled' if compiled else 'eager'} mode died "
                             f"(exit code {proc.exitcode}); its traceback is above")
        proc.join()
        results.append(r)
        # printed as each mode finishes, so a later timeout still leaves this row
        print(f"{r['mode']:<10}{r['first_step_s']:>14.2f}{r['step_s']:>10.4f}"
              f"{r['images_per_s']:>10.1f}{r['peak_mib']:>11.1f}", flush=True)
    eager, comp = results
    print(f"on {eager['device']} ({eager['threads']} threads, torch {eager['torch']})")
    ratio = comp["step_s"] / eager["step_s"]
    print(f"compiled/eager step-time ratio: {ratio:.3f} (speed-up {1 / ratio:.2f}x); "
          f"peak memory ratio: {comp['peak_mib'] / max(eager['peak_mib'], 1e-9):.3f} "
          f"({eager['peak_kind']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
