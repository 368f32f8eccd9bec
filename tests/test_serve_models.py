"""Several models in one ``enfold serve`` process: each under its name on /v1 and on the Open
Inference Protocol (driven by tritonclient.http against the real server), the single-model
routes kept for one model, and duplicate names refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
from conftest import ROOT
from test_serve import free_port, noise_png, stop, wait_healthy
from tiny_runs import train_tiny

from enfold.errors import EnfoldError
from enfold.runtime import load
from enfold.runtime.repository import ModelRepository
from enfold.runtime.server import create_repository_app

httpclient = pytest.importorskip("tritonclient.http",
                                 reason="pip install 'tritonclient[http]' (the dev extra)")

IMAGE = {"file": ("n.png", noise_png(8, 8))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("serve-models"), steps=4)


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """``enfold serve --model pre=PRETRAIN --model ft=FINETUNE`` on a free loopback port."""
    log = tmp_path_factory.mktemp("serve-models-log") / "server.log"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "enfold.cli.app", "serve", "--model",
                                 f"pre={runs['pretrain']}", "--model", f"ft={runs['finetune']}",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, log)
        yield url
    finally:
        stop(proc)


def normalised(session, x: np.ndarray) -> np.ndarray:
    mean = np.asarray(session.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(session.std, np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def test_tritonclient_infers_on_two_models_in_one_server(server, runs):
    client = httpclient.InferenceServerClient(url=server.removeprefix("http://"))
    names = {m["name"] for m in client.get_model_repository_index()}
    assert names == {"pre-restorer-k2", "pre-energy", "pre-encoder", "ft-classifier",
                     "ft-encoder"}, names
    x = np.random.default_rng(0).random((3, 3, 8, 8), dtype=np.float32)
    for model, run, target, out in [("ft-classifier", "finetune", "classifier", "logits"),
                                    ("pre-energy", "pretrain", "energy", "energy")]:
        session = load(runs[run])
        inp = httpclient.InferInput("images", list(x.shape), "FP32")
        inp.set_data_from_numpy(normalised(session, x), binary_data=True)
        got = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(out)]
                           ).as_numpy(out)
        expected = session.raw(target, x).reshape(got.shape)
        np.testing.assert_allclose(got, expected, atol=1e-4)
    listed = httpx.get(f"{server}/v2/models", timeout=10).json()["models"]
    assert sorted(m["name"] for m in listed) == sorted(names)


def test_v1_routes_per_model_and_the_single_model_routes_refused(server):
    models = httpx.get(f"{server}/v1/models", timeout=10).json()["models"]
    assert [m["name"] for m in models] == ["pre", "ft"]
    assert models[1]["endpoints"] == ["/v1/models/ft/classify"]
    r = httpx.post(f"{server}/v1/models/ft/classify", files=IMAGE, timeout=30)
    assert r.status_code == 200 and "label" in r.json(), r.text
    r = httpx.post(f"{server}/v1/models/pre/energy", files=IMAGE, timeout=30)
    assert r.status_code == 200 and isinstance(r.json()["energy"], float), r.text
    meta = httpx.get(f"{server}/v1/models/ft", timeout=10).json()
    assert meta["targets"] == ["classifier", "encoder"]
    r = httpx.post(f"{server}/v1/classify", files=IMAGE, timeout=30)
    assert r.status_code == 404 and "/v1/models/NAME/classify" in r.json()["detail"]
    r = httpx.post(f"{server}/v1/models/nope/classify", files=IMAGE, timeout=30)
    assert r.status_code == 404 and "pre, ft" in r.json()["detail"]
    assert httpx.get(f"{server}/healthz", timeout=10).json() == {"status": "ok"}


def test_one_model_keeps_its_routes_and_gains_the_named_ones(runs):
    repo = ModelRepository.from_specs([runs["pretrain"]])
    assert repo.names == ["checkpoint-last"]
    app = create_repository_app(repo)

    async def scenario():
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/v1/energy", files=IMAGE),
                    await client.post("/v1/models/checkpoint-last/energy", files=IMAGE),
                    await client.get("/v2/models/energy"),
                    await client.get("/v1/metadata")]

    plain, named, oip, meta = asyncio.run(scenario())
    assert plain.status_code == named.status_code == 200
    assert plain.json()["energy"] == pytest.approx(named.json()["energy"])
    assert oip.json()["name"] == "energy" and meta.json()["task"] == "mask"


def test_duplicate_model_names_are_an_error(runs):
    with pytest.raises(EnfoldError, match="two models are named 'checkpoint-last'"):
        ModelRepository.from_specs([runs["pretrain"], runs["finetune"]])
    with pytest.raises(EnfoldError, match="not usable in a URL"):
        ModelRepository.from_specs([f"bad name={runs['pretrain']}"])
