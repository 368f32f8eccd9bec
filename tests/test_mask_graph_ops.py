"""The mask restorer's data-consistency ops (hole finder, harmonic and biharmonic fill, paste
back) export to ONNX ops inside the TensorRT allow-list, so `make restorers` exports it."""

from __future__ import annotations

import torch
from torch import nn

from enfold.export.validate import TENSORRT_OPS
from enfold.model.consistency import KeepVisible, mask_fill_value


class _Projection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.keep = KeepVisible(mask_fill_value("zero", [0.5] * 3, [0.25] * 3), 4,
                                fill_holes=2, fill_biharmonic=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.keep.prepare(x, None)
        return self.keep.apply(self.keep.start(x, state) * 0.5, state)


def test_mask_consistency_ops_are_on_the_tensorrt_allow_list(tmp_path):
    import onnx

    x = torch.randn(3, 3, 16, 16)
    program = torch.onnx.export(_Projection().eval(), (x,), dynamo=True, opset_version=18,
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                verbose=False)
    program.save(str(tmp_path / "mask.onnx"))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "mask.onnx")).graph.node}
    assert "AveragePool" in ops  # the hole finder and fill pool: the case that failed
    assert ops <= TENSORRT_OPS, sorted(ops - TENSORRT_OPS)
