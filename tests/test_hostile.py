"""Hostile inputs, one test (or a few) per numbered case of the hostile-inputs issue: tiny uploads
that claim huge images, memory per request, restore writing over its inputs, client mistakes
that gave 5xx, tracebacks instead of errors, unclear exits. Real servers on loopback, the CLI's
own entry point, tiny models."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from pathlib import Path

import httpx
import pytest
import torch
from conftest import DIGITS_TINY, TINY, run_cli
from PIL import Image
from test_serve import start_server, stop, wait_healthy
from tiny_runs import FINETUNE_TINY, copy_run

from enfold.artifact.sidecar import Sidecar
from enfold.runtime.images import encode_png


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


THIN = png(Image.new("L", (100_000, 1)))  # 177 bytes, 100000x1
SQUARE_2000 = png(Image.new("L", (2000, 2000)))  # about 4 KB, 2000x2000
NORMAL = encode_png(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)))
UNBOUNDED = {"max_tiles": 10**7, "max_aspect": 10**6, "max_pixels": 10**9}


@pytest.fixture(scope="module")
def runs(tiny_runs):
    """The session's tiny runs (shared: a test that writes into one works on a copy)."""
    return tiny_runs


@pytest.fixture(scope="module")
def servers(runs, tmp_path_factory):
    """The tiny pretrain checkpoint (restore + energy) served twice, started together: with the
    default limits, and with limits lifted (to show cancellation and shutdown on long work)."""
    root = tmp_path_factory.mktemp("hostile-servers")
    specs = {"default": {},
             "unbounded": {**UNBOUNDED, "drain": 1, "request_timeout": 600}}
    procs = {}
    try:
        for name, kwargs in specs.items():
            log = root / f"{name}.log"
            proc, url = start_server(str(runs["pretrain"]), log, **kwargs)
            procs[name] = (proc, url, log)
        for proc, url, log in procs.values():
            wait_healthy(proc, url, log)
        yield {name: (proc, url) for name, (proc, url, _) in procs.items()}
    finally:
        for proc, _, _ in procs.values():
            stop(proc)


def post(client: httpx.AsyncClient, url: str, endpoint: str, data: bytes, **form: str):
    return client.post(f"{url}/v1/{endpoint}", files={"file": ("x.png", data)}, data=form)


async def timed(coro) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    r = await coro
    return r, time.perf_counter() - start


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``enfold ARGS`` through the console entry point, in process: exit code and stderr.
    conftest's ``run_cli`` does the work and captures on its own; the fixture arguments are
    kept for this helper's callers."""
    del monkeypatch, capsys
    proc = run_cli(*args, check=False)
    return proc.returncode, proc.stderr


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


# ----------------------------------------------------------------------------- case 1


def test_case1_tiny_uploads_claiming_huge_images_are_refused_within_2s(servers):
    """100000x1 (177 bytes) and 2000x2000 (4 KB) PNGs: a 4xx naming the limit within 2 s each,
    while a normal restore sent at the same time is served as fast as alone."""
    assert len(THIN) < 200 and len(SQUARE_2000) < 8000
    _, url = servers["default"]

    async def scenario():
        async with httpx.AsyncClient(timeout=30) as client:
            _, alone = await timed(post(client, url, "restore", NORMAL))
            _, alone = await timed(post(client, url, "restore", NORMAL))  # warm
            results = await asyncio.gather(
                timed(post(client, url, "restore", THIN)),
                timed(post(client, url, "restore", SQUARE_2000)),
                timed(post(client, url, "energy", THIN)),
                timed(post(client, url, "restore", NORMAL)))
        return alone, results

    alone, results = asyncio.run(scenario())
    (thin, t_thin), (square, t_square), (thin_e, t_thin_e), (normal, t_normal) = results
    assert thin.status_code == 422 and "max_aspect" in thin.json()["detail"], thin.text
    assert thin_e.status_code == 422 and "--max-aspect" in thin_e.json()["detail"]
    assert square.status_code == 413 and "max_tiles" in square.json()["detail"], square.text
    assert max(t_thin, t_square, t_thin_e) < 2.0, (t_thin, t_square, t_thin_e)
    assert normal.status_code == 200 and normal.headers["content-type"] == "image/png"
    assert t_normal < alone + 1.0, (t_normal, alone)


def test_case1_cli_restore_refuses_a_thin_image_from_its_header(runs, tmp_path):
    from enfold.runtime import load
    from enfold.runtime.commands import restore_files

    (tmp_path / "thin.png").write_bytes(THIN)
    start = time.perf_counter()
    results, errors = restore_files(load(runs["pretrain"]), [tmp_path / "thin.png"],
                                    tmp_path / "out", None)
    assert time.perf_counter() - start < 2.0
    assert results == [] and "aspect ratio of 100000:1" in errors[str(tmp_path / "thin.png")]


def test_case1_work_of_a_client_that_left_is_dropped(servers):
    """With the limits lifted, a 62,500-tile restore whose client gives up after 1 s is
    cancelled: its queued tiles are skipped and a normal request is served at once."""
    _, url = servers["unbounded"]
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{url}/v1/restore", files={"file": ("big.png", SQUARE_2000)}, timeout=1.0)
    time.sleep(1.0)  # the server notices the disconnect and cancels the endpoint
    start = time.perf_counter()
    r = httpx.post(f"{url}/v1/restore", files={"file": ("n.png", NORMAL)}, timeout=60)
    waited = time.perf_counter() - start
    assert r.status_code == 200
    stats = httpx.get(f"{url}/v1/stats", timeout=10).json()["restore"]
    # the big request's 62,500 tiles were never all run
    assert stats["images"] < 62_500 and stats["queued_images"] == 0, stats
    assert waited < 15.0, waited


# ----------------------------------------------------------------------------- case 2


def server_memory_kib(proc) -> tuple[int, int]:
    """(current RSS, peak RSS) of a server process, from /proc."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_case2_memory_per_request_is_bounded(servers):
    proc, url = servers["default"]
    huge = png(Image.new("RGB", (7900, 7900)))  # 62 MP: above the pixel limit
    r = httpx.post(f"{url}/v1/energy", files={"file": ("h.png", huge)}, timeout=30)
    assert r.status_code == 413 and "max_pixels" in r.json()["detail"]
    # four uploads just under the pixel limit at once: decoded two at a time and reduced to
    # the model's view right after decoding, never held as full-size float tensors
    big = png(Image.new("RGB", (4400, 4400), (90, 120, 200)))  # 19.4 MP
    before, _ = server_memory_kib(proc)

    async def four():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*[post(client, url, "energy", big) for _ in range(4)])

    responses = asyncio.run(four())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    _, peak = server_memory_kib(proc)
    # full-size float copies would be 4 x 19.4 MP x 3 x 4 bytes = 930 MB at least
    assert (peak - before) / 1024 < 450, (before, peak)


# ----------------------------------------------------------------------------- case 3


def test_case3_restore_into_its_own_folder_never_overwrites_an_input(runs, tmp_path,
                                                                      monkeypatch, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    inputs = {"a.png": NORMAL,
              "a-panel.png": encode_png(torch.rand(3, 8, 8,
                                                   generator=torch.Generator().manual_seed(1)))}
    for name, data in inputs.items():
        (folder / name).write_bytes(data)
    code, err = cli(monkeypatch, capsys, "restore", str(folder), "--model", str(runs["pretrain"]),
                    "--out", str(folder))
    assert code == 0, err
    for name, data in inputs.items():
        assert (folder / name).read_bytes() == data, f"{name} was overwritten"
    report = json.loads((folder / "restore.json").read_text())["results"]
    assert sorted(r["file"] for r in report) == sorted(str(folder / n) for n in inputs)
    outputs = [p for r in report for p in (r["restored"], r["panel"])]
    assert len(set(outputs)) == 4 and not set(outputs) & {str(folder / n) for n in inputs}
    assert all(Path(p).is_file() for p in outputs)


# ----------------------------------------------------------------------------- case 6


def test_case6_negative_seed_is_a_client_error(servers, runs, monkeypatch, capsys, tmp_path):
    _, url = servers["default"]
    r = httpx.post(f"{url}/v1/restore", files={"file": ("n.png", NORMAL)}, data={"seed": "-1"},
                   timeout=30)
    assert r.status_code == 422, r.text
    (tmp_path / "n.png").write_bytes(NORMAL)
    code, err = cli(monkeypatch, capsys, "restore", str(tmp_path / "n.png"), "--model",
                    str(runs["pretrain"]), "--out", str(tmp_path / "o"), "--seed", "-1")
    assert_one_line_error(code, err, "--seed")


# ----------------------------------------------------------------------------- case 7


def test_case7_bad_out_paths_are_one_line_errors(runs, tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    under_file = a_file / "sub"  # cannot be created, even by root
    ckpt = str(runs["pretrain"])
    ft = str(runs["finetune"])
    commands = {
        "pretrain": ["pretrain", "--config", str(DIGITS_TINY), "--out", "{out}"],
        "finetune": ["finetune", "--config", str(FINETUNE_TINY), "--out", "{out}"],
        "restore": ["restore", str(tmp_path), "--model", ckpt, "--out", "{out}"],
        "export": ["export", "--checkpoint", ckpt, "--target", "energy", "--out", "{out}"],
        "evaluate": ["evaluate", "--checkpoint", ft, "--out", "{out}"],
        "visualize": ["visualize", "--checkpoint", ckpt, "--task", "mask", "--out", "{out}"],
        "bench": ["bench", "--model", ckpt, "--out", "{out}"],
    }
    (tmp_path / "n.png").write_bytes(NORMAL)
    for name, args in commands.items():
        file_target = name in ("visualize", "bench")
        for bad in ([under_file / "x.png"] if file_target else [a_file, under_file]):
            code, err = cli(monkeypatch, capsys, *[str(bad) if a == "{out}" else a
                                                   for a in args])
            assert_one_line_error(code, err, "--out")
    code, err = cli(monkeypatch, capsys, "visualize", "--checkpoint", ckpt, "--task", "mask",
                    "--out", str(tmp_path))
    assert_one_line_error(code, err, "is a folder")


def test_case7_bad_numbers_are_one_line_errors(runs, tmp_path, monkeypatch, capsys):
    tiny = [a for item in [*TINY, "train.compile=false"] for a in ("--set", item)]
    for value in ("nan", "-1"):
        code, err = cli(monkeypatch, capsys, "pretrain", "--config", str(DIGITS_TINY), "--out",
                        str(tmp_path / f"lr{value}"), *tiny, "--set", f"train.base_lr={value}")
        assert_one_line_error(code, err, "train.base_lr")
    code, err = cli(monkeypatch, capsys, "serve", "--model", str(runs["pretrain"]),
                    "--max-upload-mb", "nan")
    assert_one_line_error(code, err, "--max-upload-mb")


# ----------------------------------------------------------------------------- case 8


def test_case8_unclear_exits_are_clear(runs, tmp_path, monkeypatch, capsys):
    for steps in ("0", "-5"):
        code, err = cli(monkeypatch, capsys, "pretrain", "--config", str(DIGITS_TINY), "--out",
                        str(tmp_path / "r"), "--max-steps", steps)
        assert_one_line_error(code, err, "--max-steps")
    tiny = [a for item in [*TINY, "train.compile=false"] for a in ("--set", item)]
    code, err = cli(monkeypatch, capsys, "pretrain", "--config", str(DIGITS_TINY), "--out",
                    str(tmp_path / "r"), *tiny, "--set", "train.max_steps=0")
    assert_one_line_error(code, err, "train.max_steps")
    assert not (tmp_path / "r" / "checkpoint-last.pt").exists()
    code, err = cli(monkeypatch, capsys, "serve", "--model", str(runs["pretrain"]), "--port",
                    "99999")
    assert_one_line_error(code, err, "--port")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    code, err = cli(monkeypatch, capsys, "predict", str(tmp_path), "--model", str(empty))
    assert_one_line_error(code, err, "empty (0 bytes)")


def test_case8_resume_past_max_steps_keeps_config_and_stale_temps_are_cleaned(runs, tmp_path):
    from enfold.checkpoint.store import LAST, load_checkpoint, save_checkpoint
    from enfold.config import load_config
    from enfold.pipeline.pretrain import run_pretrain

    run = copy_run(runs["pretrain"], tmp_path / "run").parent  # the shared run stays as it is
    assert load_checkpoint(run / LAST)["step"] > 2
    config = (run / "config.yaml").read_text()
    smaller = load_config(DIGITS_TINY, [*TINY, "train.compile=false", "train.max_steps=2",
                                        "eval.every=2"])
    run_pretrain(smaller, run)  # already past step 2: nothing to train
    assert (run / "config.yaml").read_text() == config
    stale = run / f".{LAST}.killed.tmp"
    stale.write_bytes(b"half a checkpoint")
    save_checkpoint(run / LAST, torch.load(run / LAST, weights_only=True))
    assert not stale.exists()


# ----------------------------------------------------------------------------- shutdown


def test_sigterm_stops_a_busy_server_within_seconds(servers):
    """Last: it stops the unbounded server. A 62,500-tile restore is running; SIGTERM gives it
    the --drain second, cancels it and exits."""
    proc, url = servers["unbounded"]

    async def busy_then_term() -> float:
        async with httpx.AsyncClient(timeout=60) as client:
            request = asyncio.ensure_future(post(client, url, "restore", SQUARE_2000))
            await asyncio.sleep(1.5)
            assert not request.done()
            start = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            while proc.poll() is None and time.perf_counter() - start < 30:
                await asyncio.sleep(0.1)
            request.cancel()
            return time.perf_counter() - start

    took = asyncio.run(busy_then_term())
    assert proc.poll() is not None, "the server is still running 30 s after SIGTERM"
    assert took < 6.0, took


# ----------------------------------------------------------------------------- deadline


class _SlowSession:
    """Just enough of an InferenceSession for create_app; its model takes a second."""

    metadata = Sidecar("onnx", "energy", 8, 3, (0.5,) * 3, (0.5,) * 3)
    targets = ["energy"]
    in_chans, img_size = 3, 8

    def describe(self) -> str:
        return "slow (cpu) serving energy"

    def energy(self, images: torch.Tensor) -> torch.Tensor:
        time.sleep(1.0)
        return torch.zeros(images.shape[0])


def test_a_request_past_its_deadline_gets_504_at_the_deadline():
    from enfold.runtime.server import create_app

    app = create_app(_SlowSession(), request_timeout_s=0.3)  # type: ignore[arg-type]

    async def scenario():
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await timed(client.post("/v1/energy", files={"file": ("n.png", NORMAL)}))

    r, took = asyncio.run(scenario())
    assert r.status_code == 504 and "--request-timeout" in r.json()["detail"]
    assert took < 0.9, took


def test_a_request_whose_client_disconnects_is_cancelled_in_process():
    """The ASGI app sees the body, then the disconnect: it returns long before the 1 s model
    call would, and sends no response."""
    from enfold.runtime.server import create_app

    app = create_app(_SlowSession())  # type: ignore[arg-type]
    request = httpx.Request("POST", "http://test/v1/energy",
                            files={"file": ("n.png", NORMAL)})
    body = request.read()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/energy", "raw_path": b"/v1/energy",
             "query_string": b"", "root_path": "", "server": ("test", 80),
             "client": ("127.0.0.1", 1234),
             "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]}
    sent: list[dict] = []
    calls = 0

    async def receive() -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(0.2)  # the client hangs up while the model runs
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def scenario() -> float:
        start = time.perf_counter()
        await asyncio.wait_for(app(scope, receive, send), 5)
        return time.perf_counter() - start

    took = asyncio.run(scenario())
    assert took < 0.8, took
    assert not any(m["type"] == "http.response.start" for m in sent), sent
