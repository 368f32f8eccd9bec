"""A noise-level restorer (``model.noise_level_input``) exported with sigma as a second graph
input: the sidecar records it, every backend feeds it, and `enfold restore` gives or estimates
it."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import DIGITS_TINY, TINY, train

from enfold.errors import EnfoldError
from enfold.runtime.images import encode_png

NOISE_LEVEL = [*TINY, "train.max_steps=3", "eval.every=0", "corrupt.tasks=[noise]",
               "corrupt.noise.sigma=0.02", "corrupt.noise.sigma_max=0.2",
               "model.noise_level_input=true"]


@pytest.fixture(scope="module")
def noise_level(tmp_path_factory):
    from enfold.export.export import export_artifact

    root = tmp_path_factory.mktemp("noise-level")
    ckpt = train("pretrain", DIGITS_TINY, root / "run", NOISE_LEVEL)
    onnx = export_artifact(str(ckpt), "restorer", "onnx", root / "art", batch="1:4:8")
    ts = export_artifact(str(ckpt), "restorer", "torchscript", root / "art", batch="1:4:8",
                         validate=False)
    return {"ckpt": ckpt, "onnx": onnx, "ts": ts, "root": root}


def test_export_takes_sigma_as_a_second_input_and_validates(noise_level):
    import onnx

    report = noise_level["onnx"]["validation"]
    assert report["passed"] and report["max_abs_error"] <= report["tolerance"]
    sidecar = json.loads(open(noise_level["onnx"]["sidecar"]).read())
    assert sidecar["restorer_inputs"] == ["sigma"] and sidecar["noise_ref"] > 0
    graph = onnx.load(noise_level["onnx"]["artifact"]).graph
    assert [i.name for i in graph.input] == ["images", "sigma"]


def test_every_backend_feeds_sigma_and_agrees(noise_level):
    from enfold.runtime import load

    x = torch.rand(5, 3, 8, 8)
    outs = {}
    for name, model in (("onnxruntime", noise_level["onnx"]["artifact"]),
                        ("torchscript", noise_level["ts"]["artifact"]),
                        ("torch", noise_level["ckpt"])):
        session = load(model, backend=name, device="cpu")
        assert session.restorer_inputs == ["sigma"]
        outs[name] = session.restore(x, sigma=0.1)
        with pytest.raises(EnfoldError, match="noise level sigma"):
            session.raw("restorer", x)  # the graph's own input is never guessed
        # restore() without sigma: each image's own wavelet estimate
        from enfold.corrupt.noise import estimate_sigma

        estimates = np.array([estimate_sigma(img) for img in x], np.float32)
        assert torch.allclose(session.restore(x), session.restore(x, sigma=estimates))
    assert torch.allclose(outs["onnxruntime"], outs["torch"], atol=1e-4)
    assert torch.allclose(outs["torchscript"], outs["torch"], atol=1e-4)
    session = load(noise_level["onnx"]["artifact"], backend="onnxruntime")
    per_image = session.restore(x, sigma=np.full(5, 0.1, np.float32))
    assert torch.allclose(per_image, outs["onnxruntime"])
    low, high = session.restore(x, sigma=0.02), session.restore(x, sigma=0.2)
    # the step scales with (sigma / sigma_ref)^2: a larger noise level moves further
    assert (high - x).abs().mean() > (low - x).abs().mean()


def test_cli_gives_or_estimates_sigma(noise_level, tmp_path, monkeypatch, capsys):
    from enfold.cli.app import main

    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 1, 1).expand(3, 40, 52)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    (tmp_path / "noisy.png").write_bytes(encode_png(noisy))
    model = noise_level["onnx"]["artifact"]

    def run(*extra: str) -> dict:
        out = tmp_path / f"out{len(extra)}"
        monkeypatch.setattr(sys, "argv", ["enfold", "restore", str(tmp_path / "noisy.png"),
                                          "--model", model, "--out", str(out), *extra])
        with pytest.raises(SystemExit) as exc:
            main()
        captured = capsys.readouterr()
        assert exc.value.code in (0, None), captured.err
        result = json.loads((out / "restore.json").read_text())["results"][0]
        assert f"sigma {result['sigma']:.4f} ({result['sigma_source']})" in captured.out
        return result

    estimated = run()
    assert estimated["sigma_source"] == "estimated"
    assert 0.06 < estimated["sigma"] < 0.14  # the wavelet estimate of the 0.1 noise
    given = run("--sigma", "0.05")
    assert given["sigma_source"] == "given" and given["sigma"] == 0.05


def test_a_second_pass_is_given_the_noise_the_first_left(noise_level, tmp_path, monkeypatch,
                                                         capsys):
    from fastapi.testclient import TestClient

    from enfold.cli.app import main
    from enfold.corrupt.noise import estimate_sigma
    from enfold.runtime import load
    from enfold.runtime.restore import MAX_PASSES, SECOND_PASS_FROM, restore_image
    from enfold.runtime.server import create_app

    session = load(noise_level["onnx"]["artifact"])
    gen = torch.Generator().manual_seed(1)
    noisy = (0.5 + 0.1 * torch.randn(3, 20, 28, generator=gen)).clamp(0, 1)
    two = restore_image(session, noisy, "noise", sigma=0.1)  # the default from 0.075 up
    first = restore_image(session, noisy, "noise", sigma=0.1, passes=1)
    assert first.sigma_passes == [0.1] and 0.1 >= SECOND_PASS_FROM
    left = estimate_sigma(first.restored)
    assert two.sigma_passes == [0.1, pytest.approx(left)] and two.sigma == 0.1
    again = restore_image(session, first.restored, "noise", sigma=left, passes=1)
    assert torch.allclose(two.restored, again.restored, atol=1e-6)
    assert restore_image(session, noisy, "noise", sigma=0.05).sigma_passes == [0.05]
    assert len(restore_image(session, noisy, "noise", sigma=0.1, passes=3).sigma_passes) == 3
    with pytest.raises(EnfoldError, match=f"--passes must be 1 to {MAX_PASSES}"):
        restore_image(session, noisy, "noise", passes=MAX_PASSES + 1)
    with pytest.raises(EnfoldError, match="--passes applies to the noise task"):
        restore_image(session, noisy, "gray", passes=2)

    (tmp_path / "noisy.png").write_bytes(encode_png(noisy))
    monkeypatch.setattr(sys, "argv", ["enfold", "restore", str(tmp_path / "noisy.png"),
                                      "--model", noise_level["onnx"]["artifact"], "--sigma",
                                      "0.1", "--passes", "3", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    assert exc.value.code in (0, None), captured.err
    result = json.loads((tmp_path / "out" / "restore.json").read_text())["results"][0]
    assert result["passes"] == 3 and len(result["sigma_passes"]) == 3
    assert "estimated after each pass" in captured.out
    with TestClient(create_app(session)) as client:
        r = client.post("/v1/restore", files={"file": ("n.png", encode_png(noisy))},
                        data={"task": "noise", "sigma": "0.1", "passes": "2"})
        assert r.status_code == 200, r.text
        assert len(r.headers["X-Sigma-Passes"].split(",")) == 2
        r = client.post("/v1/restore", files={"file": ("n.png", encode_png(noisy))},
                        data={"task": "noise", "passes": "9"})
        assert r.status_code == 422 and "--passes must be" in r.text
