"""Hostile inputs against ``enfold serve``, round 2: junk and deeply nested JSON on the Open
Inference Protocol, idle and slow connections under a low file limit, SIGTERM with requests in
flight, models that answer NaN, inputs far outside the pixel range, and request smuggling.
Real servers on loopback (the CLI's own entry point) where the network matters, the ASGI app in
process where it does not; tiny models throughout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from test_serve import noise_png, start_server, stop, wait_healthy
from tiny_runs import train_tiny

from enfold.runtime import load
from enfold.runtime.images import encode_png
from enfold.runtime.server import create_app

NORMAL = encode_png(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)))
FILE_LIMIT = 128  # RLIMIT_NOFILE of the "limited" server
MIB = 2**20


@contextlib.contextmanager
def inherited_file_limit(limit: int):
    """Lower this process's soft RLIMIT_NOFILE while a child starts: the child keeps it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("hostile-server"), steps=4)


@pytest.fixture(scope="module")
def servers(runs, tmp_path_factory):
    """The tiny pretrain checkpoint (restorer, energy, encoder) served twice with the default
    limits, started together: "limited" under a file limit of 128, "drain" with the image limits
    lifted and a 1 s drain (for long restores cut by SIGTERM)."""
    root = tmp_path_factory.mktemp("hostile-server-logs")
    procs = {}
    try:
        with inherited_file_limit(FILE_LIMIT):
            log = root / "limited.log"
            procs["limited"] = (*start_server(str(runs["pretrain"]), log), log)
        log = root / "drain.log"
        procs["drain"] = (*start_server(str(runs["pretrain"]), log, max_tiles=10**7,
                                        max_pixels=10**9, drain=1, request_timeout=600), log)
        for proc, url, log in procs.values():
            wait_healthy(proc, url, log)
        yield {name: (proc, url, log) for name, (proc, url, log) in procs.items()}
    finally:
        for proc, _, _ in procs.values():
            stop(proc)


def infer_body(data: list[float] | None = None, **extra: object) -> dict:
    """A valid JSON infer request for the tiny energy model (one 3x8x8 image)."""
    values = [0.0] * 192 if data is None else data
    return {**extra, "inputs": [{"name": "images", "shape": [1, 3, 8, 8], "datatype": "FP32",
                                 "data": values}]}


def peak_rss_mib(pid: int, reset: bool = False) -> float:
    """The process's peak RSS (VmHWM) in MiB; ``reset`` sets the peak to the current RSS."""
    if reset:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024


def rss_mib(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024


def assert_no_traceback(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]


# ----------------------------------------------------------------------------- 7: junk JSON


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_v2_junk_json_bodies_are_refused_within_a_memory_budget(servers):
    """20 concurrent 10 MiB bodies of ``[],[],...`` before a valid input: refused from a scan of
    their bytes (413 naming the element limit), the server's peak RSS grows by <= 500 MiB (it
    was 150 MiB per request, held until the response), and a valid request still works."""
    proc, url, log = servers["limited"]
    head = b'{"junk": ['
    tail = b"[]], " + json.dumps(infer_body())[1:].encode()
    junk = head + b"[]," * ((10 * MIB - len(head) - len(tail)) // 3) + tail
    assert 10 * MIB - 3 < len(junk) <= 10 * MIB
    try:
        before = peak_rss_mib(proc.pid, reset=True)
    except OSError:  # no clear_refs: the current RSS is the baseline (peak since start)
        before = rss_mib(proc.pid)

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*[
                client.post(f"{url}/v2/models/energy/infer", content=junk,
                            headers={"content-type": "application/json"}) for _ in range(20)])

    responses = asyncio.run(flood())
    grew = peak_rss_mib(proc.pid) - before
    assert all(r.status_code == 413 for r in responses), [r.text[:300] for r in responses]
    assert "--max-json-elements" in responses[0].json()["error"]
    assert grew <= 500, f"server peak RSS grew by {grew:.0f} MiB"
    ok = httpx.post(f"{url}/v2/models/energy/infer", json=infer_body(), timeout=30)
    assert ok.status_code == 200 and len(ok.json()["outputs"][0]["data"]) == 1, ok.text
    assert_no_traceback(log)


# ----------------------------------------------------------------------------- 14: deep JSON


def test_v2_json_nested_1000_deep_is_a_400_naming_the_depth_limit(servers):
    _, url, log = servers["limited"]
    deep = b'{"inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert len(deep) < 2100
    for _ in range(3):
        r = httpx.post(f"{url}/v2/models/energy/infer", content=deep, timeout=30)
        assert r.status_code == 400, r.text
        assert "--max-json-depth" in r.json()["error"] and "32 deep" in r.json()["error"]
    assert_no_traceback(log)


# ----------------------------------------------------------------------------- 17: smuggling


def raw_exchange(url: str, request: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``request`` on one raw connection; everything answered, and whether the server
    closed the connection (rather than the read timing out)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return data, False
        return data, True


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(servers):
    """A body framed by both headers, then a second request on the same connection: one 400,
    the connection closed, the second request never answered (it could have been smuggled)."""
    _, url, _ = servers["limited"]
    smuggled = (b"POST /v2/models/energy/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data, closed = raw_exchange(url, smuggled)
    assert data.count(b"HTTP/1.1 ") == 1, data.decode(errors="replace")
    assert data.startswith(b"HTTP/1.1 400 "), data.decode(errors="replace")
    assert b"Transfer-Encoding" in data and closed
    # each alone is fine
    data, _ = raw_exchange(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ")


# ----------------------------------------------------------------------------- 8: slowloris


def test_idle_and_slow_connections_do_not_starve_normal_requests(servers):
    """300 connections that send nothing or half a request head, against a server limited to
    128 files: a normal request is answered within 15 s, and the server closes every idle
    connection (the header timeout, 10 s by default)."""
    proc, url, log = servers["limited"]
    host, port = url.removeprefix("http://").split(":")
    sockets: list[socket.socket] = []
    try:
        for i in range(300):
            sock = socket.create_connection((host, int(port)), timeout=5)
            if i % 2:  # slowloris: a request head that never ends
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            sockets.append(sock)
        opened = time.monotonic()
        start = time.perf_counter()
        r = httpx.post(f"{url}/v1/energy", files={"file": ("n.png", NORMAL)}, timeout=15)
        took = time.perf_counter() - start
        assert r.status_code == 200 and took < 15, (r.status_code, took)
        # every idle connection is closed by the server: EOF (or a reset) on our side
        open_ones = list(sockets)
        while open_ones and time.monotonic() - opened < 25:
            still = []
            for sock in open_ones:
                sock.setblocking(False)
                try:
                    if sock.recv(4096):
                        still.append(sock)  # an answer (e.g. 503) then EOF: look again
                except BlockingIOError:
                    still.append(sock)
                except OSError:
                    pass
            open_ones = still
            time.sleep(0.5)
        assert not open_ones, f"{len(open_ones)} of 300 idle connections still open after 25 s"
    finally:
        for sock in sockets:
            sock.close()
    assert proc.poll() is None
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert "Traceback" not in log.read_text()


# ----------------------------------------------------------------------------- 11, 13 in process


def nan_session(path: Path):
    """A real session whose runner answers NaN (a model that produces non-finite values)."""
    session = load(path)
    run = session._run
    session._run = (  # type: ignore[method-assign]
        lambda target, x, *extra: run(target, x, *extra) * np.float32("nan"))
    return session


def asgi(app, *requests: tuple[str, str, dict]) -> list[httpx.Response]:
    async def scenario():
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.request(method, path, **kwargs)
                    for method, path, kwargs in requests]

    return asyncio.run(scenario())


def test_a_model_producing_nan_gets_a_clean_500_json_error(runs, caplog):
    """/v1/classify, /v1/energy, /v1/restore and /v2 infer: a 500 whose JSON says the model
    produced non-finite values; no NaN token in any body, no traceback logged."""
    image = {"files": {"file": ("n.png", NORMAL)}}
    v2 = {"json": infer_body(), "headers": {}}
    classifier = create_app(nan_session(runs["finetune"]))
    pretrain = create_app(nan_session(runs["pretrain"]))
    with caplog.at_level(logging.INFO):
        answers = asgi(classifier, ("POST", "/v1/classify", image),
                       ("POST", "/v2/models/classifier/infer", v2))
        answers += asgi(pretrain, ("POST", "/v1/energy", image),
                        ("POST", "/v1/restore", {**image, "data": {"seed": "1"}}),
                        ("POST", "/v2/models/energy/infer", v2),
                        ("POST", "/v2/models/restorer-k2/infer", v2))
    for r in answers:
        assert r.status_code == 500, (r.request.url, r.status_code, r.text)
        body = r.json()  # strict JSON: a NaN token would not parse as the error body
        message = body.get("detail") or body.get("error")
        assert "non-finite values" in message and "NaN" not in r.text.replace("(NaN", ""), \
            (r.request.url, r.text)
    assert not [rec for rec in caplog.records if rec.exc_info], \
        [rec.getMessage() for rec in caplog.records if rec.exc_info]


def test_v2_inputs_outside_the_pixel_range_are_400_naming_the_range(runs):
    """3e38 (finite, but no pixel) gave 200 with bare NaN tokens; now a 400 that names the
    range. In-range values pass, and a restorer takes a noisy input beyond [0, 1]."""
    app = create_app(load(runs["pretrain"]))  # mean 0.5, std 0.5: pixels [0, 1] -> [-1, 1]
    huge = infer_body([3e38] * 192)
    noisy = infer_body([1.8] * 96 + [-2.5] * 96)  # pixels 1.4 and -0.75: noise, not for energy
    answers = asgi(app, ("POST", "/v2/models/energy/infer", {"json": huge}),
                   ("POST", "/v2/models/restorer-k2/infer", {"json": huge}),
                   ("POST", "/v2/models/energy/infer", {"json": noisy}),
                   ("POST", "/v2/models/restorer-k2/infer", {"json": noisy}),
                   ("POST", "/v2/models/energy/infer", {"json": infer_body([1.0] * 192)}))
    for r, pixels, values in zip(answers[:3], ["[0, 1]", "[-1, 2]", "[0, 1]"],
                                 ["[-1, 1]", "[-3, 3]", "[-1, 1]"], strict=True):
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert "outside the valid range" in error and f"pixels in {pixels}" in error, error
        assert f"values in {values}" in error, error
    for r in answers[3:]:
        assert r.status_code == 200, r.text
        assert all(np.isfinite(r.json()["outputs"][0]["data"]))


# ----------------------------------------------------------------------------- 9: SIGTERM


def test_sigterm_with_16_restores_in_flight_answers_503_not_500(servers):
    """Last: it stops the "drain" server. 16 long restores are running when SIGTERM arrives:
    each gets its PNG or a 503 with a JSON error (never uvicorn's bare 500), the server exits
    about --drain (1 s) later, and the log holds no traceback."""
    proc, url, log = servers["drain"]
    big = noise_png(480, 480)  # 3,600 tiles of 8x8 each: seconds of work per request

    async def restores_then_term() -> tuple[list, float]:
        async with httpx.AsyncClient(timeout=60) as client:
            requests = [asyncio.ensure_future(
                client.post(f"{url}/v1/restore", files={"file": ("big.png", big)}))
                for _ in range(16)]
            await asyncio.sleep(2.0)
            assert not all(r.done() for r in requests)
            start = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            answers = await asyncio.gather(*requests, return_exceptions=True)
            while proc.poll() is None and time.perf_counter() - start < 30:
                await asyncio.sleep(0.1)
            return answers, time.perf_counter() - start

    answers, took = asyncio.run(restores_then_term())
    assert proc.poll() is not None and took < 8.0, took
    statuses = [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses, statuses
    cut = [a for a in answers if a.status_code == 503]
    assert all("--drain" in a.json()["detail"] for a in cut)
    assert_no_traceback(log)
