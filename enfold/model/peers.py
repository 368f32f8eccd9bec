"""Learned peers of the energy restorer: what a user would otherwise train.

    direct_vit:  x_hat = x - R(x)      R = the same ViT, its patch tokens read out as pixels
    dncnn:       x_hat = x - R(x)      R = a DnCNN-style stack of 3x3 convolutions and ReLUs
                                       with as many parameters as the ViT of the same config

Both predict the residual in one forward pass (no energy, no input gradient), are trained by
the same trainer on the same corruptions with the same loss, get the same data consistency as
the energy restorer of their config (``model.consistency``: the same smooth first guess in the
holes, the same projection of the output onto the images that agree with the input), and, for
a noise-level restorer
(``model.noise_level_input``), see the noise level as one extra constant input channel
(``sigma / sigma_ref``, as FFDNet's noise map). They expose the restorer interface the trainer,
the evaluation and the benchmarks call: ``loss``, ``restore_steps``, ``restore``.
"""

from __future__ import annotations

import abc
import dataclasses
import math

import torch
from torch import nn

from enfold.config import LossConfig, ModelConfig
from enfold.errors import ConfigError
from enfold.model.backbone import build_backbone
from enfold.model.consistency import Consistency, NoConsistency
from enfold.model.losses import NEEDS_SIGMA, pair_noise_level, reconstruction_error


class DirectRestorer(nn.Module, abc.ABC):
    """The shared part of the peers: noise-level channel, loss and the restorer interface."""

    num_steps = 1

    def __init__(self, model_cfg: ModelConfig, loss_cfg: LossConfig | None,
                 noise_ref: float | None, noise_gain: float,
                 consistency: Consistency | None = None):
        super().__init__()
        self.consistency = consistency if consistency is not None else NoConsistency()
        self.noise_level_input = model_cfg.noise_level_input
        self.noise_ref = noise_ref
        self.noise_gain = noise_gain
        self.loss_cfg = loss_cfg or LossConfig()
        self.in_chans = model_cfg.in_chans
        self.img_size = model_cfg.img_size

    @abc.abstractmethod
    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """``R(x)``: ``(B, C', H, W) -> (B, C, H, W)``, C' = C (+1 with the noise channel)."""

    def noise_level(self, corrupted: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Each image's noise sigma in pixels, read off a (normalised) noisy/clean pair."""
        return pair_noise_level(corrupted, clean, self.noise_gain)

    def with_noise_map(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``x`` with the constant ``sigma / sigma_ref`` channel appended (noise-level peers)."""
        if not self.noise_level_input:
            return x
        if sigma is None:
            raise ValueError(NEEDS_SIGMA)
        level = torch.as_tensor(sigma, dtype=x.dtype, device=x.device) / self.noise_ref
        level = level.expand(x.shape[0]).view(-1, 1, 1, 1)
        return torch.cat([x, level.expand(-1, 1, *x.shape[2:])], dim=1)

    def restore_steps(self, x: torch.Tensor, steps: int | None = None,
                      create_graph: bool = False, noise: float = 0.0,
                      weight: torch.Tensor | None = None, sigma=None) -> list[torch.Tensor]:
        """One pass, as a one-element list (``steps`` is ignored: a direct network has none).
        ``weight`` (``(B, 1, H, W)``, 1 where corrupted) tells the mask projection which pixels
        are visible, as for the energy restorer."""
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            known = self.consistency.prepare(x, weight)
            x = self.consistency.start(x, known)  # e.g. holes filled smoothly
            x = x - self.residual(self.with_noise_map(x, sigma))  # (B, C, H, W)
            return [self.consistency.apply(x, known)]

    def restore(self, x: torch.Tensor, steps: int | None = None, create_graph: bool = False,
                sigma=None, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The restored image: ``(B, C, H, W) -> (B, C, H, W)``."""
        return self.restore_steps(x, steps, create_graph, weight=weight, sigma=sigma)[-1]

    def loss(self, corrupted: torch.Tensor, clean: torch.Tensor,
             weight: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The energy restorer's loss on the one output."""
        sigma = self.noise_level(corrupted, clean) if self.noise_level_input else None
        restored = self.restore(corrupted, create_graph=True, sigma=sigma, weight=weight)
        loss = reconstruction_error(restored, clean, weight, self.loss_cfg)
        return loss, {"loss/restore": loss.detach()}

    def forward(self, corrupted: torch.Tensor, clean: torch.Tensor,
                weight: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model returns its own loss, as the energy ViT does."""
        return self.loss(corrupted, clean, weight)


class DirectViT(DirectRestorer):
    """The energy ViT's backbone as a direct regressor: patch tokens -> pixel residuals."""

    def __init__(self, model_cfg: ModelConfig, loss_cfg: LossConfig | None = None,
                 noise_ref: float | None = None, noise_gain: float = 1.0,
                 consistency: Consistency | None = None):
        super().__init__(model_cfg, loss_cfg, noise_ref, noise_gain, consistency)
        extra = 1 if model_cfg.noise_level_input else 0
        self.vit = build_backbone(dataclasses.replace(model_cfg,
                                                      in_chans=model_cfg.in_chans + extra))
        self.patch = model_cfg.patch_size
        self.readout = nn.Linear(self.vit.embed_dim, self.patch**2 * model_cfg.in_chans)
        nn.init.zeros_(self.readout.weight)  # start as the identity restorer, x_hat = x
        nn.init.zeros_(self.readout.bias)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        tokens = v.norm(v.forward_features(x))[:, v.num_prefix_tokens:]  # (B, L, D)
        p, c, g = self.patch, self.in_chans, self.img_size // self.patch
        r = self.readout(tokens).reshape(-1, g, g, c, p, p)  # (B, gh, gw, C, p, p)
        return r.permute(0, 3, 1, 4, 2, 5).reshape(-1, c, g * p, g * p)  # (B, C, H, W)


class DnCNN(DirectRestorer):
    """A DnCNN-style residual CNN, as wide as makes its parameters match the ViT's, or
    ``model.dncnn_width`` wide (a narrower one costs less per image: equal training time)."""

    def __init__(self, model_cfg: ModelConfig, loss_cfg: LossConfig | None = None,
                 noise_ref: float | None = None, noise_gain: float = 1.0,
                 consistency: Consistency | None = None, depth: int = 17,
                 params: int | None = None):
        super().__init__(model_cfg, loss_cfg, noise_ref, noise_gain, consistency)
        if depth < 3:
            raise ConfigError(f"a DnCNN needs at least 3 layers, got {depth}")
        c_in = model_cfg.in_chans + (1 if model_cfg.noise_level_input else 0)
        target = params if params is not None else vit_params(model_cfg)
        # params ~ 9 F^2 (depth - 2) for the middle layers, plus 9 F (c_in + C) at the ends
        width = model_cfg.dncnn_width or max(8, round(math.sqrt(target / (9 * (depth - 2)))))
        self.width = width
        layers: list[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        for layer in (m for m in layers if isinstance(m, nn.Conv2d)):
            # He init: PyTorch's default shrinks the signal about 6x in variance per layer, so
            # 16 layers deep the features no longer depend on the input and nothing trains
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        last = nn.Conv2d(width, model_cfg.in_chans, 3, padding=1)
        nn.init.zeros_(last.weight)  # start as the identity restorer
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def vit_params(model_cfg: ModelConfig) -> int:
    """Trainable parameters of the energy ViT's backbone for this model config."""
    return sum(p.numel() for p in build_backbone(model_cfg).parameters())


PEERS = {"direct_vit": DirectViT, "dncnn": DnCNN}
