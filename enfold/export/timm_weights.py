"""timm-loadable encoder weights: ``model.safetensors`` plus ``config.json`` in timm's hub layout.

    enfold export --checkpoint runs/digits/checkpoint-last.pt --target encoder \\
        --format safetensors --out exports/encoder-timm/

The folder then loads in any timm code, with nothing downloaded::

    cfg = json.load(open("exports/encoder-timm/config.json"))
    vit = timm.create_model(cfg["architecture"], pretrained=True, num_classes=10,
                            pretrained_cfg_overlay=dict(file="exports/encoder-timm/model.safetensors"),
                            **cfg["model_args"])
    # or: timm.create_model("local-dir:exports/encoder-timm", pretrained=True, num_classes=10)

enfold's backbone keeps timm's state-dict keys and shapes (its patchify + linear patch embedding
holds the ``(D, C, p, p)`` convolution weight itself), so the weights are written as they are;
the export then builds the model through timm's own loader and checks its pooled features
against enfold's encoder on held-out images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from enfold.errors import EnfoldError

if TYPE_CHECKING:
    from enfold.checkpoint.load import CheckpointFile

    # a checkpoint's path, or the file already opened (then neither read nor hashed again)
    Checkpoint = str | Path | CheckpointFile

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# The classifier head timm adds when asked for classes; an encoder export never holds it.
HEAD_PREFIX = "head."
TOLERANCE = 1e-4  # max |timm - enfold| on pooled features, fp32


def encoder_state(checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], Any, str]:
    """The timm ViT's weights in ``checkpoint`` (no head), its config and its stage."""
    from enfold.checkpoint.load import open_checkpoint
    from enfold.model.classifier import vit_state_from_pretrain

    checkpoint = open_checkpoint(checkpoint)
    state, stage, cfg = checkpoint.state, checkpoint.stage, checkpoint.cfg
    if stage == "pretrain":
        weights = vit_state_from_pretrain(state["model"])
    elif stage == "finetune":
        from timm.models.vision_transformer import VisionTransformer

        from enfold.checkpoint.load import load_classifier

        net, _, _ = load_classifier(checkpoint)
        # full fine-tuning holds the ViT as ``vit``, the linear probe as ``backbone.vit``
        vit = next(m for m in net.modules() if isinstance(m, VisionTransformer))
        weights = vit.state_dict()
    else:
        raise EnfoldError(f"{checkpoint.path} is a '{stage}' checkpoint; timm weights come from a "
                          "pretrain or finetune checkpoint")
    weights = {k: v.detach().contiguous() for k, v in weights.items()
               if not k.startswith(HEAD_PREFIX)}
    return weights, cfg, stage


def timm_config(cfg: Any, num_features: int, enfold_meta: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` as timm's hub export writes it: architecture, model_args, pretrained_cfg.

    ``model_args`` rebuild enfold's sizes and its pooling (mean of the normed patch tokens);
    ``pretrained_cfg`` holds the preprocessing a timm user needs. The ``enfold`` entry (ignored
    by timm) records where the weights came from.
    """
    from enfold.model.backbone import POOLING

    m = cfg.model
    model_args: dict[str, Any] = {"img_size": m.img_size, "patch_size": m.patch_size,
                                  "in_chans": m.in_chans}
    model_args.update({k: getattr(m, k) for k in ("depth", "embed_dim", "num_heads")
                       if getattr(m, k) is not None})
    model_args.update(POOLING)
    pretrained_cfg = {
        "tag": "enfold", "custom_load": False, "input_size": [m.in_chans, m.img_size, m.img_size],
        "fixed_input_size": True,
        # enfold resizes with antialiased bilinear interpolation after a centre square crop
        "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
        "mean": list(cfg.data.mean)[: m.in_chans], "std": list(cfg.data.std)[: m.in_chans],
        "num_classes": 0, "pool_size": None, "first_conv": "patch_embed.proj",
        "classifier": "head",
    }
    return {"architecture": m.arch, "num_classes": 0, "num_features": num_features,
            "global_pool": POOLING["global_pool"], "model_args": model_args,
            "pretrained_cfg": pretrained_cfg, "enfold": enfold_meta}


def load_timm_model(folder: str | Path, num_classes: int = 0) -> torch.nn.Module:
    """Build the exported ViT the way a timm user does: ``create_model`` with a file overlay."""
    import timm

    folder = Path(folder)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise EnfoldError(f"{folder} lacks {' and '.join(missing)}: timm weights are the pair "
                          "`enfold export --target encoder --format safetensors` writes")
    config = json.loads((folder / CONFIG_NAME).read_text())
    return timm.create_model(config["architecture"], pretrained=True, num_classes=num_classes,
                             pretrained_cfg_overlay={"file": str(folder / WEIGHTS_NAME)},
                             **config["model_args"]).eval()


def export_timm_weights(checkpoint: Checkpoint, out_dir: str | Path, target: str = "encoder",
                        validate: bool = True) -> dict[str, Any]:
    """Write ``model.safetensors`` and ``config.json`` into ``out_dir``; check them with timm.

    The weights are first loaded strictly into a plain timm model of the same architecture, so a
    key or shape timm does not expect is an error here rather than a silent partial load later.
    """
    import timm

    from enfold.checkpoint.load import open_checkpoint
    from enfold.checkpoint.store import atomic_write_bytes
    from enfold.model.backbone import POOLING

    if target != "encoder":
        raise EnfoldError(f"--format safetensors writes the encoder as timm weights; got --target "
                          f"{target} (use --target encoder, or onnx/torchscript for the {target})")
    checkpoint = open_checkpoint(checkpoint)  # read and hashed once
    weights, cfg, stage = encoder_state(checkpoint)
    config = timm_config(cfg, 0, {})
    plain = timm.create_model(cfg.model.arch, pretrained=False, num_classes=0,
                              **config["model_args"])
    try:
        plain.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise EnfoldError(f"the encoder in {checkpoint.path} does not match timm's "
                          f"{cfg.model.arch} with {config['model_args']}: {exc}") from exc
    meta = {"target": "encoder", "format": "safetensors", "arch": cfg.model.arch,
            "img_size": cfg.model.img_size, "in_chans": cfg.model.in_chans,
            "patch_size": cfg.model.patch_size, "mean": list(cfg.data.mean),
            "std": list(cfg.data.std), "checkpoint": str(checkpoint.path),
            "checkpoint_sha256": checkpoint.sha256, "checkpoint_stage": stage,
            "pooling": dict(POOLING), "precision": "fp32"}
    config = timm_config(cfg, int(plain.num_features), meta)
    out_dir = Path(out_dir)
    path = out_dir / WEIGHTS_NAME
    side = out_dir / CONFIG_NAME
    atomic_write_bytes(path, lambda f: f.write(_safetensors_bytes(weights)))
    atomic_write_bytes(side, lambda f: f.write(json.dumps(config, indent=2).encode()))
    result: dict[str, Any] = {"artifact": str(path), "sidecar": str(side)}
    if validate:
        result["validation"] = validate_timm_weights(out_dir, checkpoint)
    return result


def _safetensors_bytes(weights: dict[str, torch.Tensor]) -> bytes:
    # safetensors (a timm dependency) stores tensors only, no pickle; "format: pt" is the
    # metadata timm and transformers expect
    from safetensors.torch import save

    return save(weights, metadata={"format": "pt"})


def validate_timm_weights(folder: str | Path, checkpoint: Checkpoint,
                          count: int = 64) -> dict[str, Any]:
    """timm's model from ``folder`` vs enfold's encoder on held-out images (pooled features)."""
    from enfold.checkpoint.load import open_checkpoint
    from enfold.export.graphs import build_spec
    from enfold.export.validate import ValidationError, heldout_inputs

    checkpoint = open_checkpoint(checkpoint)
    folder = Path(folder)
    vit = load_timm_model(folder)
    spec = build_spec(checkpoint, "encoder", trace=False)
    (inputs, _, _), _ = heldout_inputs(checkpoint, "encoder", count)
    with torch.no_grad():
        ours = spec.reference(inputs).float()
        theirs = vit.forward_head(vit.forward_features(inputs), pre_logits=True).float()
    err = (ours - theirs).abs()
    report = {"artifact": str(folder / WEIGHTS_NAME), "target": "encoder",
              "format": "safetensors", "precision": "fp32", "loaded_by": "timm.create_model",
              "images": int(inputs.shape[0]), "max_abs_error": float(err.max()),
              "mean_abs_error": float(err.mean()), "tolerance": TOLERANCE}
    report["passed"] = bool(report["max_abs_error"] <= TOLERANCE)
    if not report["passed"]:
        raise ValidationError(f"timm's model from {folder} differs from enfold's encoder: max abs "
                              f"error {report['max_abs_error']:.3g} (tolerance {TOLERANCE:g})")
    return report
