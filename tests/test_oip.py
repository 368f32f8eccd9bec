"""The Open Inference Protocol (KServe v2) on ``enfold serve``, driven by Triton's own HTTP client
(tritonclient.http) against real servers on loopback: metadata, readiness, JSON and binary
inference equal to ``enfold.runtime``, batching, and 4xx for malformed requests."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from conftest import ROOT
from test_serve import serving

from enfold.runtime import load

httpclient = pytest.importorskip("tritonclient.http",
                                 reason="pip install 'tritonclient[http]' (the dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

DOCS = ROOT / "docs" / "deployment.md"


@pytest.fixture(scope="module")
def tiny(tiny_exports):
    """The session's tiny runs and exports (tests/tiny_runs.py)."""
    return tiny_exports


@pytest.fixture(scope="module")
def servers(tiny):
    """The ONNX classifier (a 50 ms batching window) and the pretrain checkpoint (restorer,
    energy, encoder), each under the real CLI."""
    specs = {"classifier": (tiny["artifacts"]["classifier"], {"max_wait_ms": 50.0}),
             "pretrain": (tiny["runs"]["pretrain"], {})}
    yield from serving(specs, tiny["root"], "oip")


def client(url: str, concurrency: int = 1):
    return httpclient.InferenceServerClient(url=url.removeprefix("http://"),
                                            concurrency=concurrency)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


def normalised(session, x: np.ndarray) -> np.ndarray:
    mean = np.asarray(session.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(session.std, np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def infer(c, model: str, inp_name: str, out_name: str, x: np.ndarray, binary: bool):
    inp = httpclient.InferInput(inp_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput(out_name, binary_data=binary)
    return c.infer(model, [inp], outputs=[out]).as_numpy(out_name)


def test_metadata_health_and_config(servers):
    c = client(servers["pretrain"])
    assert c.is_server_live() and c.is_server_ready()
    server = c.get_server_metadata()
    assert server["name"] == "enfold" and "binary_tensor_data" in server["extensions"]
    expected = {"restorer-k2": ("restored", [-1, 3, 8, 8]), "energy": ("energy", [-1, 1]),
                "encoder": ("features", [-1, 32])}
    for name, (out_name, out_shape) in expected.items():
        assert c.is_model_ready(name) and c.is_model_ready(name, model_version="1")
        meta = c.get_model_metadata(name)
        assert meta["name"] == name and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "images", "datatype": "FP32",
                                   "shape": [-1, 3, 8, 8]}]
        assert meta["outputs"] == [{"name": out_name, "datatype": "FP32", "shape": out_shape}]
        config = c.get_model_config(name)
        assert config["max_batch_size"] == 16 and config["name"] == name
        assert json.loads(config["parameters"]["mean"]["string_value"]) == [0.5, 0.5, 0.5]
    assert not c.is_model_ready("classifier")  # the checkpoint serves no classifier
    index = {m["name"]: m["state"] for m in c.get_model_repository_index()}
    assert index == {name: "READY" for name in expected}
    meta = client(servers["classifier"]).get_model_metadata("classifier")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_classifier_matches_runtime(servers, tiny, binary):
    session = load(tiny["artifacts"]["classifier"], backend="onnxruntime", device="cpu")
    x = pixels(5)
    logits = infer(client(servers["classifier"]), "classifier", "images", "logits",
                   normalised(session, x), binary)
    assert logits.shape == (5, 10) and logits.dtype == np.float32
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, session.classify(x), atol=1e-5)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_restorer_energy_encoder_match_runtime(servers, tiny, binary):
    session = load(tiny["runs"]["pretrain"], backend="torch", device="cpu")
    c = client(servers["pretrain"])
    x = pixels(3, seed=1)
    xn = normalised(session, x)
    restored = infer(c, "restorer-k2", "images", "restored", xn, binary)
    assert restored.shape == (3, 3, 8, 8)
    mean = np.asarray(session.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(session.std, np.float32).reshape(1, -1, 1, 1)
    as_pixels = np.clip(restored * std + mean, 0.0, 1.0)  # what session.restore returns
    np.testing.assert_allclose(as_pixels, session.restore(x), atol=1e-5)
    energy = infer(c, "energy", "images", "energy", xn, binary)
    assert energy.shape == (3, 1)
    np.testing.assert_allclose(energy[:, 0], session.energy(x), rtol=1e-5, atol=1e-5)
    features = infer(c, "encoder", "images", "features", xn, binary)
    np.testing.assert_allclose(features, session.features(x), atol=1e-5)


def test_concurrent_requests_share_batches(servers, tiny):
    c = client(servers["classifier"], concurrency=8)
    before = c.get_inference_statistics("classifier")["model_stats"][0]
    x = normalised(load(tiny["artifacts"]["classifier"], device="cpu"), pixels(1))
    pending = []
    for _ in range(8):
        inp = httpclient.InferInput("images", [1, 3, 8, 8], "FP32")
        inp.set_data_from_numpy(x)
        pending.append(c.async_infer("classifier", [inp]))
    results = [p.get_result().as_numpy("logits") for p in pending]
    assert all(np.array_equal(r, results[0]) for r in results)
    after = c.get_inference_statistics("classifier")["model_stats"][0]
    images = after["inference_count"] - before["inference_count"]
    batches = after["execution_count"] - before["execution_count"]
    assert images == 8 and batches < 8, after  # the 50 ms window joined some requests


MALFORMED = [  # (what, body, headers)
    ("not JSON", b"{nope", {}),
    ("a JSON list", b"[]", {}),
    ("no inputs", b'{"outputs": []}', {}),
    ("wrong input name", {"name": "pixels"}, {}),
    ("wrong datatype", {"datatype": "INT8"}, {}),
    ("wrong image size", {"shape": [1, 3, 9, 9], "data": [0.0] * 243}, {}),
    ("batch of zero", {"shape": [0, 3, 8, 8], "data": []}, {}),
    ("batch above max_batch_size", {"shape": [17, 3, 8, 8], "data": [0.0] * 17 * 192}, {}),
    ("too few numbers", {"data": [0.0] * 191}, {}),
    ("strings as data", {"data": ["a"] * 192}, {}),
    ("ragged data", {"data": [[0.0] * 192, [0.0]]}, {}),
    ("NaN in data", b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8],'
                    b' "data": [NaN' + b", 0.0" * 191 + b"]}]}", {}),
    ("shape not a list", {"shape": "1x3x8x8"}, {}),
    ("unknown output", None, {}),
    ("classification extension", None, {}),
    ("binary size mismatch", "binary-short", {}),
    ("header length not a number", "binary", {"Inference-Header-Content-Length": "abc"}),
    ("header length past the body", "binary", {"Inference-Header-Content-Length": "99999"}),
]


def malformed_body(what: str, body, headers: dict) -> tuple[bytes, dict]:
    tensor = {"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}
    if isinstance(body, bytes):
        return body, headers
    if isinstance(body, dict):
        return json.dumps({"inputs": [{**tensor, **body}]}).encode(), headers
    if what == "unknown output":
        return json.dumps({"inputs": [tensor], "outputs": [{"name": "probs"}]}).encode(), headers
    if what == "classification extension":
        return json.dumps({"inputs": [tensor], "outputs": [
            {"name": "logits", "parameters": {"class_count": 3}}]}).encode(), headers
    raw = np.zeros(192 if body == "binary" else 100, np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8],
                                   "parameters": {"binary_data_size": 768}}]}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), **headers}


def test_malformed_requests_get_4xx_and_the_server_stays_up(servers):
    url = servers["classifier"]
    for what, body, headers in MALFORMED:
        content, hdrs = malformed_body(what, body, headers)
        r = httpx.post(f"{url}/v2/models/classifier/infer", content=content, headers=hdrs,
                       timeout=30)
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert isinstance(r.json()["error"], str) and r.json()["error"], what
    r = httpx.post(f"{url}/v2/models/nosuch/infer", content=b"{}", timeout=30)
    assert r.status_code == 404 and "classifier" in r.json()["error"]
    assert httpx.get(f"{url}/v2/models/classifier/versions/7", timeout=30).status_code == 404
    r = httpx.get(f"{url}/v2/no/such/endpoint", timeout=30)
    assert r.status_code == 404 and "unknown endpoint" in r.json()["error"]
    # tritonclient surfaces the server's message
    c = client(url)
    with pytest.raises(InferenceServerException, match="unknown input 'pixels'"):
        infer(c, "classifier", "pixels", "logits", np.zeros((1, 3, 8, 8), np.float32), True)
    with pytest.raises(InferenceServerException, match="does not fit"):
        infer(c, "classifier", "images", "logits", np.zeros((1, 3, 4, 4), np.float32), True)
    assert c.is_server_live()
    assert infer(c, "classifier", "images", "logits", np.zeros((2, 3, 8, 8), np.float32),
                 False).shape == (2, 10)


def test_docs_client_example_runs_against_enfold_serve(servers, tiny, capsys):
    """The example in docs/deployment.md, unchanged but for the server address."""
    text = DOCS.read_text()
    match = re.search(r"<!-- oip-client-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/deployment.md lost its Open Inference Protocol client example"
    code = match.group(1).replace("localhost:8000", servers["classifier"].removeprefix("http://"))
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    session = load(tiny["artifacts"]["classifier"], backend="onnxruntime", device="cpu")
    expected = [session.class_names[i] for i in session.classify(namespace["images"]).argmax(1)]
    assert namespace["labels"] == expected
    assert str(expected) in capsys.readouterr().out
