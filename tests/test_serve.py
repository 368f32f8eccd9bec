"""``enfold.runtime.server``: the real HTTP server on loopback, its batcher and its error paths."""

from __future__ import annotations

import asyncio
import io
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from conftest import ROOT
from PIL import Image

from enfold.artifact.sidecar import Sidecar
from enfold.runtime import load
from enfold.runtime.batching import MicroBatcher
from enfold.runtime.images import decode_image, encode_png, model_view
from enfold.runtime.restore import restore_image
from enfold.runtime.server import create_app

UPLOAD_LIMIT = int(0.05 * 2**20)  # the restorer server's --max-upload-mb 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, log: Path, **kwargs: object) -> tuple[subprocess.Popen, str]:
    """``enfold serve --model MODEL --max-batch ...`` (the real CLI) on a free loopback port."""
    port = free_port()
    options = [arg for key, value in {"host": "127.0.0.1", "port": port, **kwargs}.items()
               for arg in (f"--{key.replace('_', '-')}", str(value))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:  # a file, not a pipe: a chatty server never blocks on it
        proc = subprocess.Popen([sys.executable, "-m", "enfold.cli.app", "serve", "--model",
                                 model, *options], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server did not answer /healthz in {timeout:.0f} s:\n{log.read_text()}")


def serving(specs: dict[str, tuple[str, dict]], root: Path, tag: str):
    """Start one server per ``specs`` entry (name -> (model, options)) together, wait until all
    are healthy, yield their URLs by name, and stop them all afterwards (a fixture's body)."""
    procs: dict[str, tuple[subprocess.Popen, str, Path]] = {}
    try:
        for name, (model, kwargs) in specs.items():
            log = root / f"{name}-{tag}.log"
            proc, url = start_server(str(model), log, **kwargs)
            procs[name] = (proc, url, log)
        for proc, url, log in procs.values():
            wait_healthy(proc, url, log)
        yield {name: url for name, (_, url, _) in procs.items()}
    finally:
        for proc, _, _ in procs.values():
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def models(tiny_exports, tmp_path_factory):
    """The session's tiny pretrain checkpoint and its fine-tuned classifier exported to ONNX."""
    return {"pretrain": str(tiny_exports["runs"]["pretrain"]),
            "classifier": str(tiny_exports["artifacts"]["classifier"]),
            "root": tmp_path_factory.mktemp("serve")}


@pytest.fixture(scope="module")
def servers(models):
    """Two real servers, started together: the pretrain checkpoint (restorer + energy, small
    upload limit, a longer batching window) and the ONNX classifier."""
    root = models["root"]
    specs = {"restorer": (models["pretrain"], {"max_upload_mb": 0.05, "max_wait_ms": 20.0}),
             "classifier": (models["classifier"], {})}
    yield from serving(specs, root, "server")


@pytest.fixture(scope="module")
def digits():
    """Held-out digits at the tiny model's size, as PNG uploads."""
    from enfold.data.sources import DigitsSource

    source = DigitsSource("test", 8)
    return [encode_png(source.image(i)) for i in range(16)]


def noise_png(h: int, w: int, seed: int = 0) -> bytes:
    return encode_png(torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)))


def assert_alive(url: str) -> None:
    assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}


# ----------------------------------------------------------------------------- happy paths


def test_metadata_names_backend_and_endpoints(servers):
    meta = httpx.get(f"{servers['classifier']}/v1/metadata", timeout=10).json()
    assert meta["backend"].startswith("onnxruntime") and meta["targets"] == ["classifier"]
    assert meta["endpoints"] == ["/v1/classify"] and meta["img_size"] == 8
    meta = httpx.get(f"{servers['restorer']}/v1/metadata", timeout=10).json()
    assert meta["backend"].startswith("torch") and meta["task"] == "mask"
    assert set(meta["endpoints"]) == {"/v1/restore", "/v1/energy"}


def test_classify_returns_a_label_and_the_sessions_probabilities(servers, models, digits):
    meta = httpx.get(f"{servers['classifier']}/v1/metadata", timeout=10).json()
    r = httpx.post(f"{servers['classifier']}/v1/classify", files={"file": ("d.png", digits[0])},
                   data={"top_k": "3"}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] in meta["class_names"] and int(r.headers["X-Batch-Size"]) >= 1
    scores = [row["score"] for row in body["top_k"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert body["top_k"][0]["label"] == body["label"]
    session = load(models["classifier"])
    img = model_view(decode_image(digits[0], 3), session.metadata)[None]
    expected = session.top_k(session.classify(img), 3)[0]
    assert [row["label"] for row in body["top_k"]] == [label for label, _ in expected]
    assert scores == pytest.approx([s for _, s in expected], abs=1e-5)


def test_energy_is_a_finite_float(servers, digits):
    r = httpx.post(f"{servers['restorer']}/v1/energy", files={"file": ("d.png", digits[1])},
                   timeout=30)
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["energy"], float) and math.isfinite(r.json()["energy"])
    assert int(r.headers["X-Batch-Size"]) >= 1


def test_restore_gives_a_png_of_the_uploads_size_with_psnr(servers, models):
    upload = noise_png(13, 21)  # not a multiple of the 8-pixel tile: padded and cut back
    r = httpx.post(f"{servers['restorer']}/v1/restore", files={"file": ("n.png", upload)},
                   data={"seed": "3", "simulate": "true"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    out = Image.open(io.BytesIO(r.content))
    assert out.format == "PNG" and out.size == (21, 13)
    psnr_in, psnr_out = float(r.headers["X-PSNR-Input"]), float(r.headers["X-PSNR-Restored"])
    assert math.isfinite(psnr_in) and math.isfinite(psnr_out)
    assert int(r.headers["X-Batch-Size"]) >= 6  # its 2 x 3 tiles ran together
    # the same pixels and PSNR as the library's restore_image with the same seed
    local = restore_image(load(models["pretrain"]), decode_image(upload, 3), seed=3,
                          simulate=True)
    got = decode_image(r.content, 3)
    assert (got - decode_image(encode_png(local.restored), 3)).abs().max() <= 1 / 255 + 1e-6
    assert psnr_out == pytest.approx(local.psnr()["psnr_restored"], abs=0.01)


def test_restore_small_and_degraded_uploads(servers):
    # Shorter side below the model size: padded to restore, returned at the upload's size.
    r = httpx.post(f"{servers['restorer']}/v1/restore", files={"file": ("s.png", noise_png(5, 6))},
                   data={"degraded": "true"}, timeout=60)
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (6, 5)
    assert "X-PSNR-Input" not in r.headers and "X-PSNR-Restored" not in r.headers
    r = httpx.post(f"{servers['restorer']}/v1/restore", files={"file": ("s.png", noise_png(8, 8))},
                   data={"task": "noise", "simulate": "true"}, timeout=60)
    assert r.status_code == 200 and "X-PSNR-Restored" in r.headers


def test_concurrent_requests_are_batched_and_each_gets_its_own_row(servers, digits):
    url = f"{servers['restorer']}/v1/energy"
    alone = [httpx.post(url, files={"file": ("d.png", png)}, timeout=30).json()["energy"]
             for png in digits]
    before = httpx.get(f"{servers['restorer']}/v1/stats", timeout=10).json()["energy"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*[client.post(url, files={"file": ("d.png", png)})
                                          for png in digits])

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    sizes = [int(r.headers["X-Batch-Size"]) for r in responses]
    assert max(sizes) > 1, sizes
    # a batcher that mixed up rows would hand some request another image's energy
    together = [r.json()["energy"] for r in responses]
    assert together == pytest.approx(alone, abs=1e-4)
    after = httpx.get(f"{servers['restorer']}/v1/stats", timeout=10).json()["energy"]
    assert after["images"] - before["images"] == 16
    assert after["batches"] - before["batches"] < 16


# ----------------------------------------------------------------------------- errors


def chunked_multipart(payload: bytes) -> tuple[object, dict[str, str]]:
    """A multipart body sent without Content-Length (chunked), to test the byte counter."""
    boundary = "enfold-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"'
            f"\r\nContent-Type: image/png\r\n\r\n").encode() + payload + \
        f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    return chunks(), {"content-type": f"multipart/form-data; boundary={boundary}"}


IMAGE = {"file": ("n.png", noise_png(8, 8))}
BAD_REQUESTS = {
    # name: (server, endpoint, request kwargs, expected status, text in the detail)
    "not-an-image": ("restorer", "energy", {"files": {"file": ("x.png", b"GIF? no, text")}},
                     415, "not a readable image"),
    "empty-file": ("restorer", "restore", {"files": {"file": ("e.png", b"")}}, 400, "empty"),
    "missing-field": ("classifier", "classify", {"data": {"top_k": "2"}}, 422, ""),
    "bad-top-k": ("classifier", "classify", {"files": IMAGE, "data": {"top_k": "0"}}, 422, ""),
    "oversize-by-header": ("restorer", "energy",
                           {"files": {"file": ("b.png", b"\0" * (4 * UPLOAD_LIMIT))}},
                           413, "upload too large"),
    "oversize-file": ("restorer", "energy",
                      {"files": {"file": ("b.png", b"\0" * (UPLOAD_LIMIT + 10))}},
                      413, "upload too large"),
    "unknown-task": ("restorer", "restore", {"files": IMAGE, "data": {"task": "deblur"}}, 422,
                     "unknown task 'deblur'"),
    "classify-on-restorer": ("restorer", "classify", {"files": IMAGE}, 404,
                             "serves restorer, energy"),
    "restore-on-classifier": ("classifier", "restore", {"files": IMAGE}, 404,
                              "serves classifier"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_malformed_requests_get_4xx_and_the_server_lives(servers, case):
    server, endpoint, kwargs, status, detail = BAD_REQUESTS[case]
    r = httpx.post(f"{servers[server]}/v1/{endpoint}", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert detail in str(r.json()["detail"])
    assert_alive(servers[server])


def test_oversize_chunked_upload_is_refused_while_streaming(servers):
    content, headers = chunked_multipart(b"\0" * (3 * UPLOAD_LIMIT))
    r = httpx.post(f"{servers['restorer']}/v1/energy", content=content, headers=headers,
                   timeout=30)
    assert r.status_code == 413 and "upload too large" in r.json()["detail"]
    assert_alive(servers["restorer"])


# ----------------------------------------------------------------------------- in process


def test_batcher_isolates_a_failing_batch_and_chunks_large_requests():
    calls: list[int] = []

    def fn(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        if (batch < 0).any():
            raise ValueError("poisoned batch")
        return batch * 2

    async def scenario():
        batcher = MicroBatcher(fn, max_batch=2, max_wait_ms=200)
        rows = [torch.full((1, 1), v) for v in (1.0, -1.0, 3.0, 4.0)]
        # queued in this order: [1, -1] fail together, [3, 4] succeed together
        results = await asyncio.gather(*[batcher.submit(r) for r in rows],
                                       return_exceptions=True)
        big = await batcher.submit(torch.arange(5.0).reshape(5, 1))
        await batcher.stop()
        return batcher, results, big

    batcher, results, big = asyncio.run(scenario())
    assert all(isinstance(r, ValueError) for r in results[:2])
    assert [r.rows.item() for r in results[2:]] == [6.0, 8.0]
    assert [r.batch_size for r in results[2:]] == [2, 2]
    assert big.rows.flatten().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0] and big.batch_size == 2
    assert calls == [2, 2, 2, 2, 1]
    stats = batcher.stats()
    assert stats["batches"] == 4 and stats["failed_batches"] == 1 and stats["images"] == 7
    assert stats["mean_batch_size"] == pytest.approx(7 / 4) and stats["requests"] == 5


class _BrokenSession:
    """Just enough of an InferenceSession for create_app; its model always fails."""

    metadata = Sidecar("onnx", "energy", 8, 3, (0.5,) * 3, (0.5,) * 3)
    targets = ["energy"]
    in_chans, img_size = 3, 8

    def describe(self) -> str:
        return "broken (cpu) serving energy"

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("the accelerator caught fire")


def test_a_failing_model_gives_500_json_and_the_app_keeps_serving():
    app = create_app(_BrokenSession())  # type: ignore[arg-type]

    async def scenario():
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            failed = await client.post("/v1/energy", files={"file": ("n.png", noise_png(8, 8))})
            health = await client.get("/healthz")
            stats = await client.get("/v1/stats")
        return failed, health, stats

    failed, health, stats = asyncio.run(scenario())
    assert failed.status_code == 500 and "accelerator caught fire" in failed.json()["detail"]
    assert health.json() == {"status": "ok"}
    assert stats.json()["energy"]["failed_batches"] == 1
