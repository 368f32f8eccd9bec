"""Hostile models: a checkpoint or artifact with NaN weights is refused at load; a model whose
outputs overflow gives an error instead of "nan" scores and black PNGs; an export that fails its
validation leaves no artifact behind to be served."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_hostile import NORMAL, assert_one_line_error, cli, runs  # noqa: F401 (runs: fixture)

from enfold.errors import NonFiniteOutputError, NonFiniteWeightsError


def assert_error_after_loading(code: int, err: str, needle: str) -> None:
    """Exit 2 and one error line naming ``needle``, after the model's own "model: ..." line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and needle in lines[-1], err
    assert all(line.startswith("model: ") for line in lines[:-1]), err


def doctored(src: Path, dst: Path, edit) -> Path:
    """A copy of checkpoint ``src`` whose floating weights went through ``edit``."""
    payload = torch.load(src, map_location="cpu", weights_only=True)
    payload["model"] = {k: edit(k, v) if v.is_floating_point() else v
                        for k, v in payload["model"].items()}
    torch.save(payload, dst)
    return dst


def one_nan(key: str, t: torch.Tensor) -> torch.Tensor:
    if key.endswith("weight") and t.dim() == 2:
        t = t.clone()
        t.view(-1)[0] = float("nan")
    return t


def huge(key: str, t: torch.Tensor) -> torch.Tensor:
    return t * 1e30  # finite weights, outputs past float32's range


@pytest.fixture
def image(tmp_path) -> Path:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "n.png").write_bytes(NORMAL)
    return tmp_path / "img" / "n.png"


def test_nan_weights_are_refused_at_load(runs, image, tmp_path, monkeypatch, capsys):  # noqa: F811
    pre = doctored(runs["pretrain"], tmp_path / "pre-nan.pt", one_nan)
    ft = doctored(runs["finetune"], tmp_path / "ft-nan.pt", one_nan)
    for args in (["predict", str(image), "--model", str(ft)],
                 ["score", str(image), "--model", str(pre)],
                 ["restore", str(image), "--model", str(pre), "--out", str(tmp_path / "o")]):
        code, err = cli(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, "NaN or infinite weights")
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))


def test_outputs_that_overflow_are_an_error_not_nan_answers(runs, image, tmp_path,  # noqa: F811
                                                             monkeypatch, capsys):
    from enfold.runtime import load

    pre = doctored(runs["pretrain"], tmp_path / "pre-huge.pt", huge)
    ft = doctored(runs["finetune"], tmp_path / "ft-huge.pt", huge)
    code, err = cli(monkeypatch, capsys, "predict", str(image), "--model", str(ft))
    assert_error_after_loading(code, err, "the model produced NaN/Inf")
    code, err = cli(monkeypatch, capsys, "score", str(image), "--model", str(pre))
    assert_error_after_loading(code, err, "the model produced NaN/Inf")
    session = load(pre)
    with pytest.raises(NonFiniteOutputError) as exc:
        session.energy(torch.rand(3, 3, 8, 8))
    assert exc.value.rows == [0, 1, 2]


def test_an_onnx_artifact_with_nan_weights_is_refused_at_load(runs, tmp_path):  # noqa: F811
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from enfold.artifact.sidecar import read_sidecar, write_sidecar
    from enfold.export.export import export_artifact
    from enfold.runtime import load

    path = Path(export_artifact(str(runs["pretrain"]), "energy", "onnx", tmp_path / "ex",
                                validate=False)["artifact"])
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer
                if numpy_helper.to_array(i).dtype.kind == "f" and numpy_helper.to_array(i).size)
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] = float("nan")
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path))
    meta = read_sidecar(path)
    write_sidecar(path, meta)  # a consistent file: the sha256 of the edited model
    with pytest.raises(NonFiniteWeightsError, match=init.name):
        load(path, backend="onnxruntime", device="cpu")


def test_an_export_that_fails_validation_leaves_no_artifact(runs, tmp_path,  # noqa: F811
                                                            monkeypatch, capsys):
    pre = doctored(runs["pretrain"], tmp_path / "pre-huge.pt", huge)
    out = tmp_path / "ex"
    code, err = cli(monkeypatch, capsys, "export", "--checkpoint", str(pre), "--target",
                    "energy", "--format", "torchscript", "--out", str(out))
    assert_one_line_error(code, err, "NaN/Inf", "were removed")
    assert not (out / "energy.ts").exists() and not (out / "energy.ts.json").exists()
    assert not list(out.glob("*.validation.json"))
