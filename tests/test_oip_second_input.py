"""The Open Inference Protocol on ``enfold serve`` for restorers with a second input: the model
metadata lists ``sigma`` / ``mask``, an infer request carrying them (JSON or binary, through
Triton's own HTTP client against the app served in this process on loopback) equals
``enfold.runtime.load(path).restore(x, sigma=...)``, a request without sigma gets it estimated
as ``/v1/restore`` does, and wrong shapes, datatypes and values are 400s naming the input."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from conftest import ROOT
from second_input_tiny import second_input_models, serve_in_process

from enfold.runtime import load
from enfold.runtime.server import create_app

httpclient = pytest.importorskip("tritonclient.http",
                                 reason="pip install 'tritonclient[http]' (the dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

DOCS = ROOT / "docs" / "deployment.md"
NAME = "restorer-k1"  # the noise-level restorer, exported with one step
MASK_NAME = "restorer-k2"  # the mask restorer's checkpoint: its trained two steps


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return second_input_models(tmp_path_factory)


@pytest.fixture(scope="module")
def servers(models):
    """The ONNX noise-level restorer and the mask restorer's checkpoint, each served by the
    real app in this process (a 20 ms batching window for the first)."""
    noise = load(models["onnx"], backend="onnxruntime", device="cpu")
    mask = load(models["mask"], backend="torch", device="cpu")
    with (serve_in_process(create_app(noise, max_batch=8, max_wait_ms=20.0)) as noise_url,
          serve_in_process(create_app(mask, max_batch=8)) as mask_url):
        yield {"noise": noise_url, "mask": mask_url, "noise_session": noise,
               "mask_session": mask}


def client(url: str, concurrency: int = 1):
    return httpclient.InferenceServerClient(url=url.removeprefix("http://"),
                                            concurrency=concurrency)


def normalised(session, x: np.ndarray) -> np.ndarray:
    mean = np.float32(session.mean).reshape(1, -1, 1, 1)
    std = np.float32(session.std).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def as_pixels(session, restored: np.ndarray) -> np.ndarray:
    """The raw output in pixels, as ``session.restore`` returns them."""
    mean = np.float32(session.mean).reshape(1, -1, 1, 1)
    std = np.float32(session.std).reshape(1, -1, 1, 1)
    return np.clip(restored * std + mean, 0.0, 1.0)


def tensor(name: str, value: np.ndarray, binary: bool):
    t = httpclient.InferInput(name, list(value.shape), "FP32")
    t.set_data_from_numpy(value, binary_data=binary)
    return t


def noisy(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clean = rng.random((n, 3, 1, 1), dtype=np.float32) * np.ones((1, 1, 8, 8), np.float32)
    return (clean + 0.1 * rng.standard_normal(clean.shape, dtype=np.float32)).clip(0, 1)


def test_metadata_and_config_list_the_second_input(servers):
    c = client(servers["noise"])
    meta = c.get_model_metadata(NAME)
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 8, 8]},
                              {"name": "sigma", "datatype": "FP32", "shape": [-1, 1]}]
    assert meta["outputs"] == [{"name": "restored", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]
    sigma = c.get_model_config(NAME)["input"][1]
    # as in the Triton entry (one value per row, the graph's (B,)); optional here: estimated
    assert sigma["dims"] == [1] and sigma["reshape"] == {"shape": []} and sigma["optional"]
    c = client(servers["mask"])
    assert c.get_model_metadata(MASK_NAME)["inputs"][1] == {
        "name": "mask", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
    assert not c.get_model_config(MASK_NAME)["input"][1].get("optional")
    for other in ("energy", "encoder"):  # the checkpoint's other targets take the images only
        assert [i["name"] for i in c.get_model_metadata(other)["inputs"]] == ["images"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_sigma_is_fed_to_the_restorer(servers, binary):
    session = servers["noise_session"]
    x = noisy(3)
    sigma = np.float32([[0.03], [0.1], [0.18]])  # one per image: [B, 1]
    c = client(servers["noise"])
    result = c.infer(NAME, [tensor("images", normalised(session, x), binary),
                            tensor("sigma", sigma, binary)],
                     outputs=[httpclient.InferRequestedOutput("restored", binary_data=binary)])
    restored = result.as_numpy("restored")
    assert restored.shape == (3, 3, 8, 8)
    np.testing.assert_allclose(as_pixels(session, restored),
                               session.restore(x, sigma=sigma.reshape(-1)), atol=1e-5)
    # the level matters: another sigma gives another result
    other = session.restore(x, sigma=np.float32([0.18, 0.1, 0.03]))
    assert not np.allclose(as_pixels(session, restored), other, atol=1e-4)


def test_concurrent_requests_with_their_own_sigma_share_batches(servers):
    session = servers["noise_session"]
    c = client(servers["noise"], concurrency=6)
    x = noisy(6, seed=1)
    levels = np.float32([0.02, 0.05, 0.08, 0.11, 0.14, 0.17])
    pending = [c.async_infer(NAME, [tensor("images", normalised(session, x[i:i + 1]), True),
                                    tensor("sigma", levels[i:i + 1].reshape(1, 1), True)])
               for i in range(6)]
    got = np.concatenate([p.get_result().as_numpy("restored") for p in pending])
    np.testing.assert_allclose(as_pixels(session, got), session.restore(x, sigma=levels),
                               atol=1e-5)
    stats = c.get_inference_statistics(NAME)["model_stats"][0]
    assert stats["execution_count"] < stats["inference_count"]  # rows of several requests


def test_without_sigma_it_is_estimated_as_v1_does(servers):
    session = servers["noise_session"]
    x = noisy(2, seed=2)
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [2, 3, 8, 8],
                        "data": normalised(session, x).reshape(-1).tolist()}]}
    r = httpx.post(f"{servers['noise']}/v2/models/{NAME}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["X-Sigma-Source"] == "estimated"
    restored = np.float32(r.json()["outputs"][0]["data"]).reshape(2, 3, 8, 8)
    # session.restore without sigma: each image's own wavelet estimate
    np.testing.assert_allclose(as_pixels(session, restored), session.restore(x), atol=1e-4)


def bad_requests(session) -> list[tuple[str, dict, str]]:
    """(what, request body, what the error must name)."""
    images = {"name": "images", "datatype": "FP32", "shape": [2, 3, 8, 8],
              "data": normalised(session, noisy(2)).reshape(-1).tolist()}

    def sigma(**fields) -> dict:
        return {"inputs": [images, {"name": "sigma", "datatype": "FP32", "shape": [2, 1],
                                    "data": [0.1, 0.1], **fields}]}

    return [
        ("sigma without its row axis", sigma(shape=[2]), "'sigma' shape [2] does not fit"),
        ("a sigma per pixel", sigma(shape=[2, 3, 8, 8], data=[0.1] * 384), "does not fit"),
        ("sigma rows unlike the images'", sigma(shape=[3, 1], data=[0.1] * 3), "3 rows"),
        ("sigma as FP64", sigma(datatype="FP64"), "'sigma' has datatype 'FP64'"),
        ("sigma of zero", sigma(data=[0.0, 0.1]), "noise level in pixel units"),
        ("sigma in 0-255 units", sigma(data=[25.0, 25.0]), "noise level in pixel units"),
        ("too few sigma values", sigma(data=[0.1]), "needs 2 numbers"),
        ("sigma given twice", {"inputs": [*sigma()["inputs"], sigma()["inputs"][1]]},
         "given twice"),
        ("an unknown input", {"inputs": [images, {"name": "noise_level", "datatype": "FP32",
                                                  "shape": [2, 1], "data": [0.1, 0.1]}]},
         "'sigma' (optional)"),
        ("sigma alone", {"inputs": [sigma()["inputs"][1]]}, "missing input 'images'"),
    ]


def test_bad_second_inputs_are_400s_naming_the_input(servers):
    session = servers["noise_session"]
    url = f"{servers['noise']}/v2/models/{NAME}/infer"
    for what, body, names in bad_requests(session):
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert names in r.json()["error"], (what, r.json()["error"])
    # binary sizes are checked tensor by tensor
    x = normalised(session, noisy(1)).tobytes()
    head = json.dumps({"inputs": [
        {"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8],
         "parameters": {"binary_data_size": len(x)}},
        {"name": "sigma", "datatype": "FP32", "shape": [1, 1],
         "parameters": {"binary_data_size": 4}}]}).encode()
    for tail, status in [(b"", 400), (np.float32([0.1]).tobytes() + b"xxxx", 400),
                         (np.float32([0.1]).tobytes(), 200)]:
        r = httpx.post(url, content=head + x + tail, timeout=30,
                       headers={"Inference-Header-Content-Length": str(len(head))})
        assert r.status_code == status, (tail, r.text)
    # tritonclient surfaces the message, and the server keeps serving
    c = client(servers["noise"])
    with pytest.raises(InferenceServerException, match="'sigma' shape"):
        c.infer(NAME, [tensor("images", normalised(session, noisy(2)), True),
                       tensor("sigma", np.float32([0.1, 0.1]), True)])
    assert c.is_server_live()


def test_mask_is_required_and_fed(servers):
    session = servers["mask_session"]
    rng = np.random.default_rng(3)
    x = rng.random((2, 3, 8, 8), dtype=np.float32)
    holes = (rng.random((2, 1, 8, 8)) < 0.4).astype(np.float32)
    c = client(servers["mask"])
    restored = c.infer(MASK_NAME, [tensor("images", normalised(session, x), True),
                                   tensor("mask", holes, True)]).as_numpy("restored")
    np.testing.assert_allclose(as_pixels(session, restored), session.restore(x, mask=holes),
                               atol=1e-5)
    url = f"{servers['mask']}/v2/models/{MASK_NAME}/infer"
    images = {"name": "images", "datatype": "FP32", "shape": [2, 3, 8, 8],
              "data": normalised(session, x).reshape(-1).tolist()}
    r = httpx.post(url, json={"inputs": [images]}, timeout=30)
    assert r.status_code == 400 and "missing input 'mask'" in r.json()["error"], r.text
    r = httpx.post(url, json={"inputs": [images, {"name": "mask", "datatype": "FP32",
                                                  "shape": [2, 1, 8, 8],
                                                  "data": [255.0] * 128}]}, timeout=30)
    assert r.status_code == 400 and "1 in the holes" in r.json()["error"], r.text


def test_docs_sigma_example_runs_against_enfold_serve(servers, capsys):
    """The noise-level example in docs/deployment.md, unchanged but for the server address."""
    text = DOCS.read_text()
    match = re.search(r"<!-- oip-sigma-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/deployment.md lost its Open Inference Protocol sigma example"
    code = (match.group(1).replace("localhost:8000", servers["noise"].removeprefix("http://"))
            .replace('"restorer-k1-fp16"', f'"{NAME}"'))
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    session = servers["noise_session"]
    np.testing.assert_allclose(namespace["restored"],
                               session.restore(namespace["images"], sigma=namespace["sigma"]),
                               atol=1e-5)
    assert "restored" in capsys.readouterr().out
