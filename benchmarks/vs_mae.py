"""Energy pretraining against a masked autoencoder with the same encoder, data and threads.

    pip install 'enfold[bench]'          # transformers, for ViTMAEForPreTraining
    python benchmarks/vs_mae.py

The MAE is Hugging Face ``transformers``' ``ViTMAEForPreTraining`` with enfold's digits encoder
(depth 4, width 96, 3 heads, 2x2 patches, 16x16 images, 3 channels), a 2-block 64-wide decoder,
75 % masking and the pixel loss, trained on the same unlabelled digits with the same
batch, optimizer, learning rate and schedule as ``configs/pretrain/digits-ssl.yaml``. Arms:

  enfold           configs/pretrain/digits-ssl.yaml (taken from ``--enfold-dir`` when that
                   holds a finished ``benchmarks/ssl_gain.py`` run, otherwise run here)
  mae-epochs       MAE for the same number of optimizer steps (= the same epochs)
  mae-wallclock    MAE for as many steps as fit in enfold's pretraining time
  none             no pretraining (the scratch arm)

Reported: (a) pretraining time per image of each, eager, measured side by side in this process;
(b) linear probe, kNN and 10-labels-per-class fine-tune top-1 over 3 seeds, with the fine-tune
recipe of ``benchmarks/ssl_gain.py``; (c) AUROC of enfold's energy and of the MAE's
reconstruction error at telling held-out digits from other images. Writes the tables into
docs/RESULTS.md (section ``vs_mae``), ``docs/img/accuracy_vs_wallclock.png`` and
``docs/img/training_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from common import FINETUNE, PRETRAIN, ROOT, finetune_arm, machine
from results_doc import write_section

from enfold.config import Config

MODES = ("pretrained", "linear", "knn")  # the fine-tune arms: full fine-tune, probe, kNN


def mae_model(cfg: Config, decoder: tuple[int, int, int] = (64, 2, 2), norm_pix: bool = False):
    """``ViTMAEForPreTraining`` with the encoder of ``cfg.model`` and a ``(width, depth,
    heads)`` decoder (MAE's paper uses (512, 8, 16)); a clear error without transformers."""
    try:
        from transformers import ViTMAEConfig, ViTMAEForPreTraining
    except ImportError as exc:
        raise SystemExit("benchmarks/vs_mae.py needs transformers: pip install 'enfold[bench]'"
                         ) from exc
    from enfold.model.backbone import create_vit

    # the encoder's sizes as enfold resolves them (arch defaults plus config overrides)
    vit = create_vit(cfg.model, num_classes=0)
    m = cfg.model
    model = ViTMAEForPreTraining(ViTMAEConfig(
        image_size=m.img_size, patch_size=m.patch_size, num_channels=m.in_chans,
        hidden_size=vit.embed_dim, num_hidden_layers=len(vit.blocks),
        num_attention_heads=vit.blocks[0].attn.num_heads,
        intermediate_size=vit.blocks[0].mlp.fc1.out_features, decoder_hidden_size=decoder[0],
        decoder_num_hidden_layers=decoder[1], decoder_num_attention_heads=decoder[2],
        decoder_intermediate_size=4 * decoder[0], mask_ratio=0.75,
        # plain pixel targets in the normalised image space, MAE's other published variant:
        # per-patch normalisation of a 2x2-pixel patch of an upsampled 8x8 digit mostly
        # amplifies rounding; the per-patch variant is not measured here.
        norm_pix_loss=norm_pix, layer_norm_eps=1e-6, qkv_bias=True))
    fill_sincos_positions(model)
    return model


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos position embedding, ``(1 + grid * grid, dim)`` with a zero row
    for the class token: half the channels encode the row, half the column."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    emb = torch.cat([one_axis(rows), one_axis(cols)], dim=1).float()
    return torch.cat([torch.zeros(1, dim), emb])


def fill_sincos_positions(model) -> None:
    """Give the MAE its position embeddings. They are fixed (``requires_grad=False``) sin-cos
    tables, but transformers 5.x leaves both at zero when the model is built from a config
    (measured with 5.24: the encoder's init returns early, the decoder's zeroes its table). With
    no positions the decoder cannot tell masked patches apart and the MAE learns to predict the
    mean pixel (its loss sat at the data variance, 0.41, for 7000 steps)."""
    grid = int(model.vit.embeddings.patch_embeddings.num_patches ** 0.5)
    with torch.no_grad():
        for table in (model.vit.embeddings.position_embeddings, model.decoder.decoder_pos_embed):
            if float(table.abs().sum()) == 0.0:
                table.copy_(sincos_2d(grid, table.shape[-1])[None])


def unlabelled_images(cfg: Config) -> torch.Tensor:
    """The unlabelled training split, normalised, ``(N, C, H, W)``: what enfold pretrains on."""
    from enfold.data import build_source, normalize

    source = build_source(cfg.data.source, "train", cfg.model, cfg.data)
    return normalize(torch.stack([source.image(i) for i in range(len(source))]),
                     cfg.data.mean, cfg.data.std)


def optimizer_for(model: torch.nn.Module, cfg: Config, total: int):
    """AdamW with enfold's lr scaling, warmup and cosine schedule (same recipe for every arm)."""
    from enfold.pipeline.schedule import lr_at, scaled_floor, scaled_lr

    t = cfg.train
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, betas=tuple(t.betas),
                            weight_decay=t.weight_decay)
    peak = scaled_lr(t.base_lr, cfg.data.batch_size, t.lr_batch_base)
    floor = scaled_floor(t.min_lr, t.base_lr, peak)  # as the trainer scales it

    def set_lr(step: int) -> None:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, peak, total, t.warmup_steps, floor)

    return opt, set_lr


def mae_step(model, opt, batch: torch.Tensor, seed: int) -> float:
    patches = (batch.shape[-1] // model.config.patch_size) ** 2
    # the mask comes from a seeded noise tensor, so every run masks the same patches
    noise = torch.rand(batch.shape[0], patches, generator=torch.Generator().manual_seed(seed))
    loss = model(pixel_values=batch, noise=noise).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def train_mae(cfg: Config, data: torch.Tensor, steps: int, seed: int,
              state: Path | None = None, keep: Callable[[int, object], None] | None = None,
              keep_steps: Sequence[int] = (), save_every: int = 500,
              ) -> tuple[object, float, list[tuple[int, float]]]:
    """MAE pretraining; returns the model, the wall-clock seconds it took and its training
    curve as ``(step, loss)`` every 10 steps.

    With ``state``, the run saves itself there every ``save_every`` steps (weights, optimizer,
    sampler, curve and seconds so far) and resumes from it exactly, so a cut run continues.
    ``keep(step, model)`` is called after each step in ``keep_steps`` (snapshots of one run).
    """
    from enfold.checkpoint.store import save_checkpoint

    torch.manual_seed(seed)
    model = mae_model(cfg).train()
    opt, set_lr = optimizer_for(model, cfg, steps)
    gen = torch.Generator().manual_seed(seed)
    curve: list[tuple[int, float]] = []
    start, spent = 0, 0.0
    if state is not None and state.exists():
        saved = torch.load(state, weights_only=True)
        if saved["steps"] == steps and saved["seed"] == seed:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            gen.set_state(saved["sampler"])
            start, spent = int(saved["step"]), float(saved["seconds"])
            curve = [tuple(c) for c in saved["curve"]]
            print(f"resuming the MAE from {state} at step {start}", flush=True)
    t0 = time.perf_counter()
    for step in range(start, steps):
        set_lr(step)
        idx = torch.randint(0, data.shape[0], (cfg.data.batch_size,), generator=gen)
        loss = mae_step(model, opt, data[idx], seed * 1_000_003 + step)
        if (step + 1) % 10 == 0:
            curve.append((step + 1, loss))
        if step % 500 == 0 or step == steps - 1:
            print(f"mae step {step + 1}/{steps} loss {loss:.4f}", flush=True)
        if keep is not None and step + 1 in keep_steps:
            keep(step + 1, model)
        if state is not None and ((step + 1) % save_every == 0 or step == steps - 1):
            save_checkpoint(state, {
                "steps": steps, "seed": seed, "step": step + 1, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "sampler": gen.get_state(), "curve": curve,
                "seconds": spent + time.perf_counter() - t0})
    return model.eval(), spent + time.perf_counter() - t0, curve


def mae_to_enfold_checkpoint(model, cfg: Config, path: Path) -> Path:
    """The MAE encoder as an enfold pretrain checkpoint (timm key names), written by the
    trainer's own checkpoint writer, so the fine-tune stage loads it exactly as it loads
    enfold's own (head-only missing keys, asserted)."""
    from enfold.pipeline.trainer import write_checkpoint

    src = {k[len("vit."):]: v for k, v in model.state_dict().items() if k.startswith("vit.")}
    out = {"cls_token": src.pop("embeddings.cls_token"),
           "pos_embed": src.pop("embeddings.position_embeddings"),
           "patch_embed.proj.weight": src.pop("embeddings.patch_embeddings.projection.weight"),
           "patch_embed.proj.bias": src.pop("embeddings.patch_embeddings.projection.bias"),
           "norm.weight": src.pop("layernorm.weight"), "norm.bias": src.pop("layernorm.bias")}
    for i in range(cfg.model.depth):
        p, b = f"layers.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[b + f"attn.qkv.{kind}"] = torch.cat(
                [src.pop(p + f"attention.{n}_proj.{kind}") for n in "qkv"])
            out[b + f"attn.proj.{kind}"] = src.pop(p + f"attention.o_proj.{kind}")
            out[b + f"norm1.{kind}"] = src.pop(p + f"layernorm_before.{kind}")
            out[b + f"norm2.{kind}"] = src.pop(p + f"layernorm_after.{kind}")
            out[b + f"mlp.fc1.{kind}"] = src.pop(p + f"mlp.fc1.{kind}")
            out[b + f"mlp.fc2.{kind}"] = src.pop(p + f"mlp.fc2.{kind}")
    if src:  # another transformers layout: fail rather than fine-tune a half-loaded encoder
        raise SystemExit(f"unmapped ViTMAE encoder weights: {sorted(src)[:5]} ...")
    write_checkpoint(path, stage="pretrain", step=0, cfg=cfg,
                     model_state={f"vit.{k}": v.detach().clone() for k, v in out.items()})
    return path


def step_times(cfg: Config, data: torch.Tensor, calls: int = 20) -> dict[str, float]:
    """Seconds per optimizer step, eager, both models on the same batches, interleaved."""
    from enfold.model import build_energy_model

    enfold_model = build_energy_model(cfg).train()
    mae = mae_model(cfg).train()
    e_opt, _ = optimizer_for(enfold_model, cfg, 1000)
    m_opt, _ = optimizer_for(mae, cfg, 1000)
    corruption = ssl_corruption(cfg)
    times = {"enfold": [], "mae": []}
    for i in range(calls + 3):
        batch = data[i * 8 % data.shape[0]:][: cfg.data.batch_size]
        corrupted, weight = corruption(batch, i)
        t0 = time.perf_counter()
        loss, _ = enfold_model(corrupted, batch, weight)
        e_opt.zero_grad(set_to_none=True)
        loss.backward()
        e_opt.step()
        t1 = time.perf_counter()
        mae_step(mae, m_opt, batch, i)
        t2 = time.perf_counter()
        if i >= 3:  # warm-up calls not timed
            times["enfold"].append(t1 - t0)
            times["mae"].append(t2 - t1)
    return {k: statistics.median(v) for k, v in times.items()}


def ssl_corruption(cfg: Config):
    """Batch version of the config's pretext task (normalised space in, normalised out)."""
    from enfold.corrupt import CorruptionContext, build_corruption, corrupt_batch
    from enfold.data import denormalize, normalize

    one = build_corruption(cfg.corrupt, CorruptionContext.from_config(cfg))

    def apply(batch: torch.Tensor, seed: int):
        pix = denormalize(batch, cfg.data.mean, cfg.data.std)
        corrupted, _, weight = corrupt_batch(one, pix, seed)
        return normalize(corrupted, cfg.data.mean, cfg.data.std), weight

    return apply


def auroc_rows(cfg: Config, enfold_ckpt: Path, mae, count: int = 256) -> list[dict]:
    """AUROC of "is this a held-out digit?" from enfold's energy and the MAE's error."""
    from sklearn.metrics import roc_auc_score

    from enfold.checkpoint.load import load_energy_model
    from enfold.data import build_source, normalize

    model, _ = load_energy_model(enfold_ckpt)
    digits = normalize(torch.stack([build_source("digits", "heldout", cfg.model, cfg.data)
                                    .image(i) for i in range(count)]), cfg.data.mean,
                       cfg.data.std)
    photos_src = build_source("photos:bundled", "heldout", cfg.model, cfg.data,
                              heldout_count=count)
    # photo crops seen as the digits are: gray, at the digits' size
    photos = torch.stack([photos_src.image(i).mean(0, keepdim=True).expand(3, -1, -1)
                          for i in range(min(count, len(photos_src)))])
    photos = normalize(photos, cfg.data.mean, cfg.data.std)
    masked, _ = ssl_corruption(cfg)(digits, 99)
    noise = torch.randn(digits.shape, generator=torch.Generator().manual_seed(7)) * 0.2
    noisy = digits + noise / torch.tensor(cfg.data.std).view(1, -1, 1, 1)

    def mae_error(x: torch.Tensor) -> np.ndarray:
        n = (x.shape[-1] // cfg.model.patch_size) ** 2
        errs = []
        for rep in range(4):  # average over 4 fixed masks: a steadier score
            noise_ = torch.rand(x.shape[0], n, generator=torch.Generator().manual_seed(rep))
            with torch.no_grad():
                out = mae(pixel_values=x, noise=noise_)
                target = mae.patchify(x)
                if mae.config.norm_pix_loss:
                    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
                    target = (target - mean) / (var + 1e-6) ** 0.5
                err = ((out.logits - target) ** 2).mean(-1)
                errs.append(((err * out.mask).sum(1) / out.mask.sum(1)).numpy())
        return np.mean(errs, axis=0)

    def energy(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model.energy(x).numpy()

    rows = []
    for name, other in (("photo crops", photos), ("masked digits", masked),
                        ("noisy digits (sigma 0.2)", noisy)):
        labels = np.r_[np.zeros(len(digits)), np.ones(len(other))]  # 1 = not a clean digit
        for scorer, fn in (("enfold energy", energy), ("MAE reconstruction error", mae_error)):
            scores = np.r_[fn(digits), fn(other)]
            rows.append({"negatives": name, "score": scorer,
                         "auroc": float(roc_auc_score(labels, scores))})
    return rows


def downstream(arm_dir: Path, ckpt: Path | None, seeds: list[int],
               config: Path = FINETUNE, labels_per_class: int = 10) -> dict[str, list]:
    """Fine-tune, probe and kNN top-1 per seed with the fine-tune ``config`` (reusing finished
    runs in ``arm_dir`` of the same config and checkpoint)."""
    scores: dict[str, list[float]] = {}
    for seed in seeds:
        for arm in (("scratch",) if ckpt is None else MODES):
            top1 = finetune_arm(arm, seed, checkpoint=ckpt, out=arm_dir, config=config,
                               labels_per_class=labels_per_class).top1
            scores.setdefault(arm, []).append(top1)
            print(f"{arm_dir.name} seed {seed} {arm} top-1 {top1:.4f}", flush=True)
    return scores


def fmt(vals: list[float]) -> str:
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.3f} ± {std:.3f}"


def plot(points: list[tuple[str, float, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, seconds, vals in points:
        ax.errorbar(seconds / 60, statistics.mean(vals), yerr=statistics.stdev(vals),
                    marker="o", capsize=3, label=name)
    ax.set_xlabel("pretraining wall-clock (min, eager, this machine)")
    ax.set_ylabel("fine-tune top-1 (10 labels/class)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_curves(enfold_metrics: Path, mae_curves: dict[str, list[tuple[int, float]]],
                epoch_per_step: float, path: Path) -> None:
    """Training curves: enfold's restoration loss and held-out masked PSNR, the MAEs' loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from enfold.pipeline.progress import read_metrics

    records = read_metrics(enfold_metrics)
    train = [(r["step"] * epoch_per_step, r["loss"]) for r in records if "loss" in r]
    psnr = [(r["step"] * epoch_per_step, r["eval/mask/psnr_restored"]) for r in records
            if "eval/mask/psnr_restored" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(*zip(*train, strict=True))
    axes[0].set_title("enfold: restoration loss (train)")
    axes[1].plot(*zip(*psnr, strict=True), marker="o")
    axes[1].set_title("enfold: held-out masked PSNR (dB)")
    for name, curve in mae_curves.items():
        steps, losses = np.array(curve).T
        # the per-batch loss is noisy: a running mean over 25 records (250 steps)
        window = min(25, len(losses))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes[2].plot(steps[window - 1:] * epoch_per_step, smooth, label=name)
    axes[2].set_title("MAE: pixel loss (train, running mean)")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("pretraining epochs")
    axes[0].set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--enfold-dir", type=Path, default=ROOT / "runs" / "ssl_gain_ssl",
                        help="a finished `benchmarks/ssl_gain.py --out DIR` run to reuse")
    parser.add_argument("--scratch-dir", type=Path, default=ROOT / "runs" / "ssl_gain",
                        help="where finished scratch arms may be reused from")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "vs_mae")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--plot", type=Path,
                        default=ROOT / "docs" / "img" / "accuracy_vs_wallclock.png")
    parser.add_argument("--curves", type=Path,
                        default=ROOT / "docs" / "img" / "training_curves.png")
    args = parser.parse_args()

    from enfold.config import load_config
    from enfold.pipeline.pretrain import run_pretrain

    t_start = time.time()
    cfg = load_config(PRETRAIN, ["train.compile=false"])
    steps = cfg.train.max_steps
    data = unlabelled_images(cfg)
    per_step = step_times(cfg, data)
    print(f"seconds per step (eager, batch {cfg.data.batch_size}): {per_step}", flush=True)
    enfold_seconds = steps * per_step["enfold"]
    wall_steps = int(round(enfold_seconds / per_step["mae"]))

    enfold_ckpt = run_pretrain(load_config(PRETRAIN), args.enfold_dir / "pretrain")
    arms: dict[str, dict] = {"enfold": {"ckpt": enfold_ckpt, "dir": args.enfold_dir,
                                        "steps": steps, "seconds": enfold_seconds}}
    mae_for_ood = None
    mae_curves = {}
    for name, n in (("mae-epochs", steps), ("mae-wallclock", wall_steps)):
        ckpt = args.out / name / "pretrain" / "checkpoint-last.pt"
        model, seconds, mae_curves[name] = train_mae(cfg, data, n, seed=0)
        mae_to_enfold_checkpoint(model, cfg, ckpt)
        arms[name] = {"ckpt": ckpt, "dir": args.out / name, "steps": n, "seconds": seconds}
        mae_for_ood = model if name == "mae-epochs" else mae_for_ood
    results = {name: downstream(a["dir"], a["ckpt"], args.seeds) for name, a in arms.items()}
    results["none"] = downstream(args.scratch_dir, None, args.seeds)
    ood = auroc_rows(cfg, enfold_ckpt, mae_for_ood)

    command = "python benchmarks/vs_mae.py " + " ".join(sys.argv[1:])
    epochs = lambda n: n * cfg.data.batch_size / data.shape[0]  # noqa: E731
    lines = [
        "## enfold vs a masked autoencoder (same encoder, same digits, same threads)",
        "",
        f"Command: `{command.strip()}` ({len(args.seeds)} seeds, 10 labels per class, 300 "
        "fine-tuning steps per arm as in ssl_gain; MAE: transformers "
        "`ViTMAEForPreTraining`, 2-block 64-wide decoder, 75 % masking, pixel loss in the "
        f"normalised image space). {machine()}; took {(time.time() - t_start) / 60:.1f} min.",
        "",
        f"Pretraining step time (eager, batch {cfg.data.batch_size}, median of 20 interleaved "
        f"steps): enfold {per_step['enfold'] * 1e3:.1f} ms, MAE {per_step['mae'] * 1e3:.1f} "
        f"ms, i.e. {per_step['enfold'] / cfg.data.batch_size * 1e3:.2f} vs "
        f"{per_step['mae'] / cfg.data.batch_size * 1e3:.2f} ms per image: "
        f"**enfold/MAE = {per_step['enfold'] / per_step['mae']:.2f}**.",
        "",
        "| arm | pretraining | fine-tune top-1 | linear probe | kNN |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, a in arms.items():
        r = results[name]
        lines.append(f"| {name} | {a['steps']} steps ({epochs(a['steps']):.0f} epochs), "
                     f"{a['seconds'] / 60:.1f} min | {fmt(r['pretrained'])} | "
                     f"{fmt(r['linear'])} | {fmt(r['knn'])} |")
    lines.append(f"| none | - | {fmt(results['none']['scratch'])} | - | - |")
    lines += ["", "enfold's minutes are its eager step time times its steps (the shipped run is "
              "compiled); the MAE's are measured.", "",
              "Out-of-distribution: AUROC of telling 256 held-out digits (negatives: 0) from "
              "other images (1), higher score = less digit-like:", "",
              "| other images | enfold energy | MAE reconstruction error |", "| --- | --- | --- |"]
    for neg in dict.fromkeys(r["negatives"] for r in ood):
        vals = {r["score"]: r["auroc"] for r in ood if r["negatives"] == neg}
        lines.append(f"| {neg} | {vals['enfold energy']:.3f} | "
                     f"{vals['MAE reconstruction error']:.3f} |")
    plot([("none", 0.0, results["none"]["scratch"])]
         + [(n, a["seconds"], results[n]["pretrained"]) for n, a in arms.items()], args.plot)
    plot_curves(args.enfold_dir / "pretrain" / "metrics.jsonl", mae_curves,
                epochs(1), args.curves)
    lines += ["", f"![accuracy vs wall-clock](img/{args.plot.name})", "",
              "Training curves (enfold from its run's metrics.jsonl, the MAEs from this run):",
              "", f"![training curves](img/{args.curves.name})"]
    text = "\n".join(lines)
    print(text)
    (args.out / "vs_mae.json").write_text(json.dumps(
        {"step_seconds": per_step, "results": results, "ood": ood, "mae_curves": mae_curves,
         "arms": {n: {k: str(v) for k, v in a.items()} for n, a in arms.items()}}, indent=2))
    write_section(args.results, "vs_mae", text)


if __name__ == "__main__":
    main()
