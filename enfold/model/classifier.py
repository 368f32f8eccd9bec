"""Classifiers built on the pretrained ViT: full fine-tuning and the linear probe.

The energy ViT's weights go into a timm classifier of the same architecture with fused attention
back on: classification needs no second-order gradient.
"""

from __future__ import annotations

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from enfold.errors import EnfoldError
from enfold.model.backbone import POOLING, create_vit

HEAD_KEYS = {"head.weight", "head.bias"}


class ViTClassifier(nn.Module):
    """timm ViT: ``(B, C, H, W) -> logits (B, num_classes)``; features are pooled patch tokens."""

    def __init__(self, model_cfg, num_classes: int):
        super().__init__()
        self.vit = create_vit(model_cfg, num_classes=num_classes, **POOLING)
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-logit features: ``(B, C, H, W) -> (B, D)``."""
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)


class LinearProbe(nn.Module):
    """Frozen backbone, then batch norm without affine and a linear head (MAE's protocol)."""

    def __init__(self, backbone: ViTClassifier, num_classes: int):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        dim = backbone.vit.num_features
        self.head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6),
                                  nn.Linear(dim, num_classes))
        nn.init.trunc_normal_(self.head[1].weight, std=0.01)
        nn.init.zeros_(self.head[1].bias)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.backbone.eval()  # frozen means no dropout, no drop path, fixed statistics
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def vit_state_from_pretrain(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ViT's own weights from an energy checkpoint (drops energy head and step sizes)."""
    return {k[len("vit."):]: v for k, v in model_state.items() if k.startswith("vit.")}


def load_backbone_weights(vit: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load pretrained ViT weights; only the new classifier head may be missing.

    Position embeddings are resampled when the image size differs. Anything else that does not
    fit (another depth, width, patch size) is a clear error, not a silent partial load.
    """
    state = dict(state)
    target = vit.state_dict()
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != target["pos_embed"].shape and pos.shape[-1] == \
            target["pos_embed"].shape[-1]:
        state["pos_embed"] = resample_abs_pos_embed(
            pos, new_size=list(vit.patch_embed.grid_size),
            num_prefix_tokens=vit.num_prefix_tokens,
        )
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state.items() if k in target and v.shape != target[k].shape]
    unexpected = sorted(set(state) - set(target))
    missing = sorted(set(target) - set(state))
    extra_missing = [k for k in missing if k not in HEAD_KEYS]
    if mismatched or unexpected or extra_missing:
        details = mismatched[:4] + [f"unexpected: {k}" for k in unexpected[:4]] + \
            [f"missing: {k}" for k in extra_missing[:4]]
        raise EnfoldError(
            f"{source} holds a different architecture than the config describes "
            f"({'; '.join(details)}). Use the model section the checkpoint was pretrained with "
            "(model.arch, depth, embed_dim, num_heads, patch_size, in_chans)."
        )
    result = vit.load_state_dict(state, strict=False)
    if set(result.missing_keys) != HEAD_KEYS & set(target) or result.unexpected_keys:
        raise EnfoldError(f"loading {source}: missing {result.missing_keys}, unexpected "
                          f"{result.unexpected_keys}; expected only the new head to be missing")
