"""EnergyViT: the forward pass is an energy, its input gradient is the decoder.

    E(x)      = head(ViT(x))                       x: (B, C, H, W) -> (B,)
    x_{k+1}   = P(x_k - alpha_k * dE/dx(x_k))      k = 0 .. K-1, alpha_k > 0 learned
                (alpha_k * (sigma / sigma_ref)^2 with ``model.noise_level_input``)
    loss      = sum_k w_k * d(x_{k+1}, x_clean)    on the corrupted region (or everywhere)

``P`` is the data-consistency projection of a single-task restorer (``model.consistency``; see
:mod:`enfold.model.consistency`), the identity otherwise. At inference the energy may be averaged
over the patch grid shifted by half a patch (``set_grid_shifts(4)``, cycle spinning): still one
energy, whose gradient follows no single patch grid, so the restored image shows fewer block
seams. Training differentiates the loss
through the input gradients (second order); ``model.backprop_steps="last"`` detaches every step
but the last, which makes the second-order pass cost one step whatever K is. The input gradient
is taken with ``torch.func.grad`` rather than ``torch.autograd.grad(create_graph=True)`` because
only the former compiles under ``torch.compile``; eager gives the
same values either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from enfold.config import Config, LossConfig, ModelConfig
from enfold.errors import ConfigError
from enfold.model.backbone import build_backbone
from enfold.model.consistency import NoConsistency, build_consistency
from enfold.model.heads import build_energy_head
from enfold.model.losses import NEEDS_SIGMA, pair_noise_level, reconstruction_error
from enfold.model.peers import PEERS

# each step's noise level from the image it starts from and its index: (x_k, k) -> sigma
SigmaAt = Callable[[torch.Tensor, int], "torch.Tensor | float"]
GRID_SHIFTS = (1, 4)  # one patch grid, or the four shifts of it by half a patch



class EnergyViT(nn.Module):
    """A ViT whose scalar output is an energy and whose input gradient restores images."""

    def __init__(self, model_cfg: ModelConfig, loss_cfg: LossConfig | None = None,
                 consistency: nn.Module | None = None, noise_ref: float | None = None,
                 noise_gain: float = 1.0):
        """``noise_ref``: sigma_ref in pixels (``model.noise_level_input`` only); ``noise_gain``:
        the mean over channels of 1/std^2, which turns a pixel variance into a normalised one."""
        super().__init__()
        if model_cfg.noise_level_input and not (noise_ref and noise_ref > 0):
            raise ConfigError("model.noise_level_input needs the noise level the step sizes "
                              f"refer to (a positive sigma_ref), got {noise_ref}")
        if model_cfg.steps < 1:
            raise ConfigError(f"model.steps must be at least 1, got {model_cfg.steps}")
        if model_cfg.step_size <= 0:
            raise ConfigError(f"model.step_size must be positive, got {model_cfg.step_size}")
        self.vit = build_backbone(model_cfg)
        self.head = build_energy_head(model_cfg.energy_head, self.vit.embed_dim,
                                      model_cfg.patch_size, model_cfg.in_chans)
        # The final norm serves the classifier only; frozen here it stays at its identity init
        # and DDP sees no unused trainable parameter.
        self.vit.norm.requires_grad_(False)
        if model_cfg.energy_head == "linear":
            # With a linear energy the last residual bias only shifts E by a constant, so it
            # never gets a gradient; frozen, DDP does not wait for it.
            self.vit.blocks[-1].mlp.fc2.bias.requires_grad_(False)
        self.num_steps = model_cfg.steps
        # log-parametrised so the step sizes stay positive whatever the optimizer does
        log_alpha = torch.full((model_cfg.steps,), math.log(model_cfg.step_size))
        if model_cfg.learn_step_sizes:
            self.log_step_sizes = nn.Parameter(log_alpha)
        else:
            self.register_buffer("log_step_sizes", log_alpha)
        self.langevin_noise = model_cfg.langevin_noise
        self.noise_level_input = model_cfg.noise_level_input
        self.noise_ref = noise_ref
        self.noise_gain = noise_gain
        self.consistency = consistency if consistency is not None else NoConsistency()
        self.backprop_steps = model_cfg.backprop_steps
        self.img_size = model_cfg.img_size
        self.in_chans = model_cfg.in_chans
        self.patch_size = model_cfg.patch_size
        self.grid_shifts = 1  # an inference setting (set_grid_shifts); training uses one grid
        self.step_decay = 1.0  # an inference setting (set_step_decay): steps beyond the trained K
        self.loss_cfg = loss_cfg or LossConfig()
        self.margin_weight = loss_cfg.margin_weight if loss_cfg else 0.0
        self.margin = loss_cfg.margin if loss_cfg else 1.0
        self.step_weights = self._check_step_weights(loss_cfg.step_weights if loss_cfg else None)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (eager only: torch.func.grad refuses it)."""
        self.grad_checkpointing = enable

    def _check_step_weights(self, weights: list[float] | None) -> list[float]:
        if weights is None:
            return [0.0] * (self.num_steps - 1) + [1.0]
        if len(weights) != self.num_steps or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(
                f"loss.step_weights must hold model.steps={self.num_steps} non-negative numbers "
                f"with a positive sum, got {weights}"
            )
        return [float(w) for w in weights]

    # ------------------------------------------------------------------ the method

    def check_input(self, x: torch.Tensor) -> None:
        """Fail early, with a readable message, on images the model cannot take."""
        want = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"expected images of shape (B, {want[0]}, {want[1]}, {want[2]}), "
                             f"got {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens of the residual stream: ``(B, C, H, W) -> (B, L, D)``.

        Read before the final LayerNorm: after it every token has the same squared norm at
        initialisation, which would make the sqnorm energy constant with a zero input gradient.
        """
        v = self.vit
        h = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))  # (B, prefix + L, D)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for block in v.blocks:
                h = checkpoint(block, h, use_reentrant=False)
        else:
            h = v.blocks(h)
        return h[:, v.num_prefix_tokens:]

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """What a classifier built from this ViT sees: ``(B, C, H, W) -> (B, D)``."""
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)

    def set_grid_shifts(self, shifts: int) -> None:
        """Average the energy over ``shifts`` patch grids (1, or 4: shifted by half a patch)."""
        if shifts not in GRID_SHIFTS:
            raise ConfigError(f"--grid-shifts must be 1 or 4, got {shifts}")
        if shifts > 1 and self.patch_size < 2:
            raise ConfigError("--grid-shifts 4 needs patches of at least 2 pixels, got "
                              f"patch size {self.patch_size}")
        self.grid_shifts = shifts

    def set_step_decay(self, decay: float) -> None:
        """Steps beyond the trained K: each ``decay`` times the one before (1: all of them the
        last trained alpha). Extra steps descend from an image the training never saw, where a
        full step can overshoot."""
        if not 0 < decay <= 1:
            raise ConfigError(f"--step-decay must be in (0, 1], got {decay}")
        self.step_decay = float(decay)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """One scalar energy per image: ``(B, C, H, W) -> (B,)``. Low means like the data."""
        if self.grid_shifts == 1:
            return self.grid_energy(x)
        h = self.patch_size // 2
        shifted = [_shift(x, dy, dx) for dy, dx in ((0, 0), (0, h), (h, 0), (h, h))]
        return self.grid_energy(torch.cat(shifted)).view(len(shifted), -1).mean(0)  # (B,)

    def grid_energy(self, x: torch.Tensor) -> torch.Tensor:
        """The energy on the model's own patch grid: ``(B, C, H, W) -> (B,)``."""
        if getattr(self.head, "needs_image", False):  # the reconstruction energy
            return self.head(self.features(x), x)
        return self.head(self.features(x))

    def step_sizes(self, steps: int | None = None) -> torch.Tensor:
        """alpha_k for ``steps`` steps; steps beyond the trained K reuse the last alpha, times
        ``step_decay`` once more for each further step (:meth:`set_step_decay`)."""
        steps = steps or self.num_steps
        alpha = self.log_step_sizes.exp()  # (K,)
        extra = steps - self.num_steps
        if extra > 0 and self.step_decay == 1:
            alpha = torch.cat([alpha, alpha[-1:].expand(extra)])
        elif extra > 0:  # python scalars: no constant tensor enters a traced graph
            alpha = torch.cat([alpha, *(alpha[-1:] * self.step_decay ** j
                                        for j in range(1, extra + 1))])
        return alpha[:steps]

    def noise_level(self, corrupted: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Each image's noise sigma in pixels, read off a (normalised) noisy/clean pair:
        ``(B, C, H, W) x 2 -> (B,)`` (see :func:`pair_noise_level`)."""
        return pair_noise_level(corrupted, clean, self.noise_gain)

    def step_scale(self, sigma: torch.Tensor | float | None, x: torch.Tensor
                   ) -> torch.Tensor | float:
        """1, or ``(sigma / sigma_ref)^2`` as ``(B, 1, 1, 1)`` for a noise-level restorer."""
        if not self.noise_level_input:
            return 1.0
        if sigma is None:
            raise ValueError(NEEDS_SIGMA)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        return (sigma / self.noise_ref).pow(2).expand(x.shape[0]).view(-1, 1, 1, 1)

    def energy_grad(self, x: torch.Tensor) -> torch.Tensor:
        """dE/dx: ``(B, C, H, W) -> (B, C, H, W)``; differentiable in the parameters and x."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            if not x.requires_grad:
                x = x.detach().requires_grad_()
            (grad,) = torch.autograd.grad(self.energy(x).sum(), x, create_graph=True)
            return grad
        return torch.func.grad(lambda x_: self.energy(x_).sum())(x)

    def restore_steps(
        self, x: torch.Tensor, steps: int | None = None, create_graph: bool = False,
        noise: float = 0.0, weight: torch.Tensor | None = None,
        sigma: torch.Tensor | float | SigmaAt | None = None,
    ) -> list[torch.Tensor]:
        """Every restoration step ``[x_1, ..., x_K]``, each ``(B, C, H, W)``.

        ``create_graph=True`` keeps the graph so a loss on the steps trains the model (second
        order); otherwise the steps are computed without a parameter graph (inference).
        ``weight`` (``(B, 1, H, W)``, 1 where corrupted) tells the mask projection which pixels
        are visible; without it the holes are found from their fill value. ``sigma`` (a number
        or ``(B,)``, pixels) is the noise level a ``model.noise_level_input`` restorer needs;
        it may also be a function ``(x_k, k) -> sigma`` called before each step ``k`` (from 0)
        with the image that step starts from, e.g. the given level first and then the noise an
        estimator finds left in the image.
        """
        alpha = self.step_sizes(steps)
        scale = None if callable(sigma) else self.step_scale(sigma, x)  # 1, or (B, 1, 1, 1)
        train = create_graph and torch.is_grad_enabled()
        known = self.consistency.prepare(x, weight)  # what the measurement pins down
        x = self.consistency.start(x, known)  # e.g. holes filled smoothly before the first step
        out: list[torch.Tensor] = []
        for k in range(alpha.shape[0]):
            # backprop_steps="last": earlier steps only move the starting point of the last
            detach = self.backprop_steps == "last" and k < alpha.shape[0] - 1
            with torch.set_grad_enabled(train and not detach):
                step_scale = self.step_scale(sigma(x, k), x) if callable(sigma) else scale
                x = x - alpha[k] * step_scale * self.energy_grad(x)  # (B, C, H, W)
                x = self.consistency.apply(x, known)
                if noise > 0:
                    x = x + noise * torch.randn_like(x)  # Langevin-style exploration
            out.append(x.detach() if detach else x)
        return out

    def restore(self, x: torch.Tensor, steps: int | None = None, create_graph: bool = False,
                sigma: torch.Tensor | float | SigmaAt | None = None) -> torch.Tensor:
        """Restore a corrupted image by gradient descent on the energy: ``x_0 -> x_K``."""
        return self.restore_steps(x, steps, create_graph, sigma=sigma)[-1]

    def reconstruction_error(self, restored: torch.Tensor, clean: torch.Tensor,
                             weight: torch.Tensor) -> torch.Tensor:
        """The training error of one restored batch (see :func:`reconstruction_error`)."""
        return reconstruction_error(restored, clean, weight, self.loss_cfg)

    def loss(self, corrupted: torch.Tensor, clean: torch.Tensor,
             weight: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss: restore ``corrupted`` with K steps and compare with ``clean``."""
        noise = self.langevin_noise if self.training else 0.0
        sigma = self.noise_level(corrupted, clean) if self.noise_level_input else None
        steps = self.restore_steps(corrupted, create_graph=True, noise=noise, weight=weight,
                                   sigma=sigma)
        total = sum(self.step_weights)
        restore_loss = sum(
            w * self.reconstruction_error(x_k, clean, weight)
            for w, x_k in zip(self.step_weights, steps, strict=True) if w > 0
        ) / total
        parts = {"loss/restore": restore_loss.detach()}
        loss = restore_loss
        if self.margin_weight > 0:
            # Push clean images at least `margin` below their corrupted versions.
            gap = self.energy(clean) - self.energy(corrupted) + self.margin  # (B,)
            margin_loss = F.relu(gap).mean()
            parts["loss/margin"] = margin_loss.detach()
            loss = loss + self.margin_weight * margin_loss
        return loss, parts

    def forward(self, corrupted: torch.Tensor, clean: torch.Tensor,
                weight: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model returns its own loss, so the training core never learns how it is made."""
        return self.loss(corrupted, clean, weight)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` shifted by ``(dy, dx)`` pixels with wrap-around: ``(B, C, H, W) -> (B, C, H, W)``.
    Slices and a concatenation rather than ``torch.roll``, whose decomposition puts index tensors
    made on a fixed device into the exported graph."""
    if dy:
        x = torch.cat([x[:, :, -dy:], x[:, :, :-dy]], dim=2)
    if dx:
        x = torch.cat([x[:, :, :, -dx:], x[:, :, :, :-dx]], dim=3)
    return x


def build_energy_model(cfg: Config) -> EnergyViT:
    """Build the energy ViT described by a full :class:`enfold.config.Config`."""
    task = None
    for name in ("fill_holes", "fill_biharmonic"):
        if getattr(cfg.model, name) and not cfg.model.consistency:
            raise ConfigError(f"model.{name} needs model.consistency=true (the holes it fills "
                              "are the ones the mask projection knows)")
    noise_ref = None
    if cfg.model.noise_level_input:
        if cfg.corrupt.tasks != ["noise"]:
            raise ConfigError("model.noise_level_input is for noise restorers: it needs "
                              f"corrupt.tasks=[noise], got {cfg.corrupt.tasks}")
        sigma = cfg.corrupt.noise
        noise_ref = math.sqrt(sigma.sigma * (sigma.sigma_max or sigma.sigma))
    if cfg.model.consistency:
        if len(cfg.corrupt.tasks) != 1:
            raise ConfigError(
                "model.consistency needs a single-task restorer (one entry in corrupt.tasks, "
                f"got {cfg.corrupt.tasks}); turn it off for task mixtures"
            )
        task = cfg.corrupt.tasks[0]
    consistency = build_consistency(
        task, cfg.model.img_size, cfg.corrupt.sr.factor, list(cfg.data.mean), list(cfg.data.std),
        mask_fill=cfg.corrupt.mask.fill,
        mask_patch=cfg.corrupt.mask.patch_size or cfg.model.patch_size,
        fill_holes=cfg.model.fill_holes, fill_biharmonic=cfg.model.fill_biharmonic)
    gain = sum(1.0 / s**2 for s in cfg.data.std) / len(cfg.data.std)
    if cfg.model.restorer != "energy":
        return PEERS[cfg.model.restorer](cfg.model, cfg.loss, noise_ref=noise_ref,
                                         noise_gain=gain, consistency=consistency)
    return EnergyViT(cfg.model, cfg.loss, consistency, noise_ref=noise_ref, noise_gain=gain)
