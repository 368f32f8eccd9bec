"""The exportable graphs: what each ``--target`` computes, as a module of plain tensor ops.

What each target computes in eager PyTorch is ``enfold.artifact.targets``; this module traces it.
The restorer is the interesting one: ``K`` unrolled steps, each an energy forward and its input
gradient, traced by ``make_fx`` into a flat graph of aten ops (backward included) with the learned
step sizes baked in. Nothing in it needs autograd at run time. A learned peer's restorer is its
one forward pass, traced the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch._decomp import core_aten_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from enfold.artifact.targets import TargetModule, restorer_inputs, torch_target
from enfold.checkpoint.load import CheckpointFile
from enfold.errors import EnfoldError


@dataclass
class ExportSpec:
    """A module to export plus what its consumers need to know about it."""

    target: str
    module: nn.Module  # forward(x: (B, C, H, W) float32) -> one tensor
    reference: Any  # callable computing the same thing eagerly, for validation
    img_size: int
    in_chans: int
    metadata: dict[str, Any] = field(default_factory=dict)


def trace_batch(avoid: set[int]) -> int:
    """A batch size for symbolic tracing that equals no other dimension.

    Symbolic tracing gives equal sizes the same symbol ("duck sizing"), so tracing at batch 3
    with 3 channels would tie the batch to the channel count and bake it into the graph.
    """
    for n in (7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47):
        if n not in avoid:
            return n
    raise EnfoldError("could not find a batch size distinct from the model's dimensions")


def extra_examples(inputs: list[str], x: torch.Tensor) -> list[torch.Tensor]:
    """Example tensors for a restorer's other inputs at ``x``'s batch: sigma ``(B,)`` and the
    hole mask ``(B, 1, H, W)``."""
    b, _, h, w = x.shape
    shapes = {"sigma": (b,), "mask": (b, 1, h, w)}
    return [torch.full(shapes[name], 0.1 if name == "sigma" else 0.0) for name in inputs]


def unrolled_restorer(model, steps: int) -> nn.Module:
    """Trace ``model.restore(x, steps)`` into one flat graph of aten ops with a free batch;
    a noise-level restorer takes sigma ``(B,)`` and a mask restorer the hole mask
    ``(B, 1, H, W)`` as further inputs (:func:`enfold.artifact.targets.restorer_inputs`)."""
    avoid = {model.in_chans, model.img_size, steps} | vit_sizes(model.vit)
    return traced_restorer(model, steps, avoid)


def one_pass_restorer(model) -> nn.Module:
    """Trace a learned peer's one forward pass (``x - R(x)``, with the noise-level channel of a
    noise-level peer) into a flat graph of aten ops with a free batch, taking the same inputs
    as :func:`unrolled_restorer`."""
    # the batch must differ from every size inside, a DnCNN's width among them
    avoid = {model.in_chans, model.in_chans + 1, model.img_size}
    avoid |= {d for p in model.parameters() for d in p.shape}
    if hasattr(model, "vit"):
        avoid |= vit_sizes(model.vit)
    return traced_restorer(model, 1, avoid)


def vit_sizes(vit: nn.Module) -> set[int]:
    """The sizes inside a timm ViT a traced batch must not equal: patch grid and tokens, width,
    heads, MLP width, depth."""
    grid = vit.patch_embed.grid_size[0]
    avoid = {grid, grid * grid, grid * grid + 1, vit.embed_dim, vit.patch_embed.patch_size[0],
             len(vit.blocks)}
    for block in vit.blocks:
        avoid |= {block.attn.num_heads, block.attn.head_dim, block.mlp.fc1.out_features}
    return avoid


def traced_restorer(model, steps: int, avoid: set[int]) -> nn.Module:
    """``model.restore_steps(x, steps)`` traced by ``make_fx`` at a batch outside ``avoid``,
    with the restorer's other inputs after the images."""
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.zeros(trace_batch(avoid), model.in_chans, model.img_size, model.img_size)
    inputs = restorer_inputs(model)

    def restore(x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        given = dict(zip(inputs, extra, strict=True))
        return model.restore_steps(x, steps, weight=given.get("mask"),
                                   sigma=given.get("sigma"))[-1]

    graph = make_fx(restore, decomposition_table=core_aten_decompositions(),
                    tracing_mode="symbolic", _allow_non_fake_inputs=True)(
                        x, *extra_examples(inputs, x))
    return TargetModule(follow_input_device(graph))


# Factory ops the input-gradient graph creates (zeros for slice/select backward), and the
# tensor method that makes the same tensor on its ``self``'s device.
_ON_INPUT_DEVICE = {
    torch.ops.aten.full.default: torch.ops.aten.new_full.default,
    torch.ops.aten.zeros.default: torch.ops.aten.new_zeros.default,
    torch.ops.aten.empty.memory_format: torch.ops.aten.new_empty.default,
}


def follow_input_device(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Make every tensor the graph creates live on the device of its input.

    ``make_fx`` records factory calls with the tracing device (``full(..., device=cpu)``), and
    TorchScript keeps that constant, so a graph traced on the CPU failed on a GPU. Rewriting
    them as ``x.new_full(...)`` lets the device follow ``x`` in eager, FX and TorchScript alike.
    """
    x = next(n for n in graph.graph.nodes if n.op == "placeholder")
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or not isinstance(node.kwargs.get("device"), torch.device):
            continue
        method = _ON_INPUT_DEVICE.get(node.target)
        if method is None:
            raise EnfoldError(f"the restorer graph creates a tensor with {node.target} on a fixed "
                              "device; enfold cannot export it portably (please report this)")
        kwargs = {k: v for k, v in node.kwargs.items() if k not in ("device", "memory_format")}
        with graph.graph.inserting_before(node):
            new = graph.graph.call_function(method, (x, *node.args), kwargs)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.graph.erase_node(node)
    graph.graph.lint()
    graph.recompile()
    return graph


def build_spec(checkpoint: str | Path | CheckpointFile, target: str, steps: int | None = None,
               task: str | None = None, trace: bool = True,
               grid_shifts: int | None = None, step_decay: float | None = None) -> ExportSpec:
    """Rebuild the model of ``checkpoint`` (a path, or a file already opened) and the graph
    for ``target``.

    ``trace=False`` skips tracing the restorer graph (when only the eager module is needed).
    """
    eager = torch_target(checkpoint, target, steps, task, grid_shifts, step_decay)
    module = eager.module
    if target == "restorer" and trace and eager.metadata["restorer"] == "energy":
        module = unrolled_restorer(eager.model, eager.metadata["steps"])
    elif target == "restorer" and trace:  # a learned peer (direct_vit, dncnn)
        module = one_pass_restorer(eager.model)
    return ExportSpec(target, module, eager.module, eager.img_size, eager.in_chans,
                      eager.metadata)
