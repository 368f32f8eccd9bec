"""torch.compile of the whole second-order loss agrees with eager."""

from __future__ import annotations

import pytest
import torch

from enfold.config import load_config
from enfold.model import build_energy_model

# Stated tolerance: float32 reassociation in fused kernels; observed errors are ~1e-7.
LOSS_RTOL, GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-6, 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
])
def test_compiled_loss_and_gradients_match_eager(device, monkeypatch):
    if device == "cuda":  # compare fp32 with fp32, not with TF32 matmuls and convolutions
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cfg = load_config(None, ["model.img_size=8", "model.patch_size=2", "model.depth=1",
                             "model.embed_dim=32", "model.num_heads=2"])
    torch.manual_seed(0)
    model = build_energy_model(cfg).to(device)
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 8, 8, generator=g).to(device)
    weight = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float().to(device)
    corrupted = clean * (1 - weight)
    params = [p for p in model.parameters() if p.requires_grad]

    eager_loss, _ = model(corrupted, clean, weight)
    eager_grads = torch.autograd.grad(eager_loss, params)
    compiled_loss, _ = torch.compile(model)(corrupted, clean, weight)
    compiled_grads = torch.autograd.grad(compiled_loss, params)

    torch.testing.assert_close(compiled_loss, eager_loss, rtol=LOSS_RTOL, atol=0)
    for p_eager, p_comp in zip(eager_grads, compiled_grads, strict=True):
        torch.testing.assert_close(p_comp, p_eager, rtol=GRAD_RTOL, atol=GRAD_ATOL)
    assert any(gr.abs().sum() > 0 for gr in compiled_grads)
