"""The timm ViT, prepared to be differentiated twice and exported.

Three changes, none of which alter the state dict (so timm weights still load):
- attention uses the explicit softmax path, because fused SDPA kernels have no double backward;
- the convolutional patch embedding runs as patchify + matmul with the flattened conv weight,
  because ``aten.convolution_backward`` has no ONNX lowering;
- every linear layer flattens its input to 2-D, so traced graphs keep the batch dimension symbolic.
"""

from __future__ import annotations

import difflib

import timm
import torch
import torch.nn.functional as F
from torch import nn

from enfold.errors import ConfigError


class PatchifyLinear(nn.Module):
    """Drop-in for the ``Conv2d(k=p, stride=p)`` patch projection, as reshape + linear.

    ``x: (B, C, H, W) -> (B, D, H/p, W/p)``, the same layout the convolution returns.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.kernel_size != conv.stride or conv.padding not in (0, (0, 0)):
            raise ConfigError("patch embedding must be a non-overlapping conv (kernel == stride)")
        self.patch = conv.kernel_size
        self.weight = conv.weight  # (D, C, p, p): same parameter, same state-dict key
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        ph, pw = self.patch
        gh, gw = h // ph, w // pw
        x = x.reshape(-1, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, ph, pw)
        x = x.reshape(-1, c * ph * pw)  # (B*gh*gw, C*ph*pw)
        x = F.linear(x, self.weight.flatten(1), self.bias)  # (B*gh*gw, D)
        return x.reshape(-1, gh, gw, x.shape[-1]).permute(0, 3, 1, 2)  # (B, D, gh, gw)


class FlatLinear(nn.Linear):
    """``nn.Linear`` that applies its matmul to a 2-D view, keeping batch sizes symbolic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = F.linear(x.reshape(-1, self.in_features), self.weight, self.bias)
        return y.reshape(*lead, self.out_features)


def prepare_for_energy(vit: nn.Module) -> nn.Module:
    """Apply the three changes above in place and return the model."""
    for module in vit.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
        if type(module) is nn.Linear:
            module.__class__ = FlatLinear  # same parameters, new forward
    proj = getattr(getattr(vit, "patch_embed", None), "proj", None)
    if isinstance(proj, nn.Conv2d):
        vit.patch_embed.proj = PatchifyLinear(proj)
    return vit


def create_vit(model_cfg, num_classes: int = 0, **extra) -> nn.Module:
    """Create the timm VisionTransformer named by ``model_cfg.arch`` with the config's sizes.

    ``extra`` goes to timm (e.g. ``global_pool``).
    """
    overrides = {
        key: getattr(model_cfg, key)
        for key in ("depth", "embed_dim", "num_heads")
        if getattr(model_cfg, key) is not None
    }
    if not timm.is_model(model_cfg.arch):
        close = difflib.get_close_matches(model_cfg.arch, timm.list_models("vit_*"), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.arch '{model_cfg.arch}' is not a timm model{hint}")
    if model_cfg.img_size % model_cfg.patch_size:
        raise ConfigError(
            f"model.img_size {model_cfg.img_size} must be a multiple of model.patch_size "
            f"{model_cfg.patch_size}"
        )
    try:
        vit = timm.create_model(
            model_cfg.arch,
            pretrained=False,  # never download at run time
            num_classes=num_classes,
            img_size=model_cfg.img_size,
            patch_size=model_cfg.patch_size,
            in_chans=model_cfg.in_chans,
            drop_path_rate=model_cfg.drop_path,
            **overrides,
            **extra,
        )
    except (TypeError, AssertionError, ValueError) as exc:
        msg = f"timm could not build '{model_cfg.arch}' with {overrides}: {exc}"
        raise ConfigError(msg) from exc
    if not (hasattr(vit, "patch_embed") and hasattr(vit, "blocks")):
        raise ConfigError(f"model.arch '{model_cfg.arch}' is not a plain VisionTransformer")
    return vit


# Classifiers average the normed patch tokens (the tokens the energy reads) instead of using the
# class token, which the energy never looks at; fc_norm=False keeps timm's state-dict keys.
POOLING = {"global_pool": "avg", "fc_norm": False}


def build_backbone(model_cfg) -> nn.Module:
    """The energy path's ViT: no classifier head, prepared for double backward and export."""
    return prepare_for_energy(create_vit(model_cfg, num_classes=0, **POOLING))
