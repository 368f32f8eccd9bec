"""Load test for ``enfold serve``: a bounded number of real uploads against a loopback server.

    python benchmarks/serve_load.py                          # trains + exports a tiny restorer
    python benchmarks/serve_load.py --model exported/restorer-k2.onnx --requests 500 \
        --concurrency 16 --max-batch 16 --max-wait-ms 5 --out serve-load.json
    python benchmarks/serve_load.py --checkpoint runs/ft/checkpoint-last.pt   # exports, serves
    python benchmarks/serve_load.py --hostile 0.1   # a clean run, then one with 10 % hostile

The server runs in a child process on a free 127.0.0.1 port (never another interface); the
client keeps ``--concurrency`` requests in flight until ``--requests`` have been answered, each
uploading a PNG of a held-out digit (scikit-learn's test split, never seen in training). It
reports the status codes, throughput, latency percentiles and the batch sizes the server formed
(from the ``X-Batch-Size`` headers and from ``/v1/stats``). The exit status is 1 when any
request failed: a 5xx, a connection error, or any other non-200 answer (every upload is valid).

``--hostile F`` runs the load twice against the same server: clean, then with a fraction F of the
requests hostile: uploads (a 177-byte 100000x1 PNG, a 4 KB 2000x2000 PNG, a 60 KB 7900x7900
PNG, a truncated PNG, random bytes, an empty file, an upload over the size limit) and Open
Inference Protocol bodies (JSON nested 1,000 deep; a body of ``[],[],...`` as large as the upload
limit allows, before a valid input), while ``--idle-connections`` sockets stay open that send
nothing or half a request head. It reports the 5xx count, the hostile answers by kind, the p99
latency of the normal requests against the clean run and the server's RSS before and after, and
fails (exit 1) on any 5xx, any failed normal request, a normal p99 above twice the clean one, or
an RSS after more than 20 % above before. Last, the server gets SIGTERM with ``--concurrency``
normal requests in flight: every one must be answered 200 or 503 (never another 5xx, never a
dropped connection) and the server must exit within its drain time (5 s) and 5 s more.

Client and server share the machine: on a few CPU cores the client's own work is part of what
is measured, so compare numbers only between runs on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "pretrain" / "digits-tiny.yaml"
ENDPOINT_OF = {"restorer": "restore", "classifier": "classify", "energy": "energy"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="artifact (or checkpoint) to serve as it is")
    src.add_argument("--checkpoint", help="checkpoint to export to ONNX first (--target)")
    p.add_argument("--target", choices=sorted(ENDPOINT_OF), default=None,
                   help="what to export from --checkpoint (default: restorer for a pretrain "
                        "checkpoint, classifier for a fine-tuned one)")
    p.add_argument("--pretrain-steps", type=int, default=60,
                   help="steps of the tiny digits model trained when no model is given")
    p.add_argument("--workdir", help="where built artifacts and the server log go "
                                     "(default: a temporary directory, removed afterwards)")
    p.add_argument("--endpoint", choices=["classify", "restore", "energy"], default=None,
                   help="default: restore for restorers, else what the model serves")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup", type=int, default=None,
                   help="requests sent (and not measured) before the run (default: concurrency)")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default=None)
    p.add_argument("--upload-size", type=int, default=None,
                   help="side of the uploaded digits in pixels (default: the model's img_size; "
                        "larger uploads are restored as several tiles)")
    p.add_argument("--server-threads", type=int, default=None,
                   help="OMP_NUM_THREADS for the server (default: inherited)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--hostile", type=float, default=0.0,
                   help="fraction of hostile uploads in a second run (e.g. 0.1); 0: clean only")
    p.add_argument("--idle-connections", type=int, default=200,
                   help="sockets held open during the hostile run, half of them sending half a "
                        "request head (default 200)")
    p.add_argument("--out", help="write the JSON report here")
    args = p.parse_args(argv)
    if not 0.0 <= args.hostile < 1.0:
        p.error("--hostile must be in [0, 1)")
    for name in ("requests", "concurrency", "max_batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(cmd: list[str], what: str) -> None:
    """Run a build step; on failure show its output and stop."""
    print(f"[build] {what}: {shlex.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{what} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                 f"{proc.stderr[-4000:]}")


def export_onnx(checkpoint: str, target: str | None, out_dir: Path) -> str:
    from enfold.checkpoint.store import load_checkpoint
    from enfold.export.export import export_artifact

    if target is None:
        stage = load_checkpoint(checkpoint).get("stage")
        target = "classifier" if stage == "finetune" else "restorer"
    print(f"[build] exporting the {target} of {checkpoint} to ONNX in {out_dir}", flush=True)
    result = export_artifact(checkpoint, target, "onnx", out_dir)
    if not result["validation"]["passed"]:
        sys.exit(f"the exported {target} does not match PyTorch: {result['validation']}")
    return str(result["artifact"])


def build_model(args: argparse.Namespace, work: Path) -> str:
    """The artifact to serve: --model, an export of --checkpoint, or a tiny restorer trained
    here (``enfold pretrain`` on digits-tiny, then exported to ONNX)."""
    if args.model:
        return args.model
    if args.checkpoint:
        return export_onnx(args.checkpoint, args.target, work / "exported")
    out = work / "pretrain"
    run([sys.executable, "-m", "enfold.cli.app", "pretrain", "--config", str(TINY_CONFIG),
         "--max-steps", str(args.pretrain_steps), "--no-compile", "--set", "eval.every=0",
         "--out", str(out)], "training a tiny digits restorer")
    return export_onnx(str(out / "checkpoint-last.pt"), args.target or "restorer",
                       work / "exported")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, model: str, log: Path) -> tuple[subprocess.Popen,
                                                                          str]:
    import httpx

    port = free_port()
    code = ("from enfold.runtime.server import serve; "
            f"serve({model!r}, backend={args.backend!r}, device={args.device!r}, "
            f"host='127.0.0.1', port={port}, max_batch={args.max_batch}, "
            f"max_wait_ms={args.max_wait_ms})")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.server_threads:
        env["OMP_NUM_THREADS"] = str(args.server_threads)
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"the server did not answer /healthz within 180 s:\n{log.read_text()[-4000:]}")


def uploads(img_size: int, in_chans: int, count: int) -> list[bytes]:
    """PNGs of the first ``count`` held-out digits (cycled when more are needed)."""
    from enfold.data.sources import DigitsSource
    from enfold.runtime.images import encode_png

    source = DigitsSource("test", img_size, in_chans)
    return [encode_png(source.image(i)) for i in range(min(count, len(source)))]


def hostile_uploads(max_upload_bytes: int) -> dict[str, bytes]:
    """Uploads a careful attacker sends: tiny files claiming huge images, damaged files, an
    empty one and one over the size limit."""
    import io

    from PIL import Image

    def png(img: Image.Image) -> bytes:
        out = io.BytesIO()
        img.save(out, format="PNG")
        return out.getvalue()

    normal = png(Image.new("RGB", (32, 32), (20, 90, 160)))
    return {"thin-100000x1": png(Image.new("L", (100_000, 1))),
            "square-2000x2000": png(Image.new("L", (2000, 2000))),
            "huge-7900x7900": png(Image.new("L", (7900, 7900))),
            "truncated": normal[: len(normal) // 2],
            "random-bytes": os.urandom(2048),
            "empty": b"",
            "over-size-limit": b"\0" * (max_upload_bytes + 1)}


def hostile_v2_bodies(model: str, in_shape: list[int], max_upload_bytes: int
                      ) -> dict[str, dict[str, Any]]:
    """Open Inference Protocol requests that cost the server before round 2: JSON nested 1,000
    deep (a RecursionError and a traceback) and ``[],[],...`` before a valid input (150 MiB of
    lists per 10 MiB body). Values are httpx request arguments."""
    count = 1
    for d in in_shape:
        count *= d
    valid = json.dumps({"inputs": [{"name": "images", "shape": [1, *in_shape],
                                    "datatype": "FP32", "data": [0.0] * count}]})
    head, tail = b'{"junk": [', b"[]], " + valid[1:].encode()
    size = min(max_upload_bytes, 10 * 2**20) - 1024
    junk = head + b"[]," * max(0, (size - len(head) - len(tail)) // 3) + tail
    deep = b'{"inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    path = f"/v2/models/{model}/infer"
    return {kind: {"path": path, "content": body,
                   "headers": {"content-type": "application/json"}}
            for kind, body in (("v2-deep-json", deep), ("v2-junk-json", junk))}


def open_idle_connections(url: str, count: int) -> list[socket.socket]:
    """``count`` sockets to the server that send nothing (even ones) or half a request head
    (odd ones: slowloris)."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for i in range(count):
        try:
            sock = socket.create_connection((host, int(port)), timeout=5)
            if i % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        except OSError:
            continue
        sockets.append(sock)
    return sockets


async def load_test(url: str, endpoint: str, pngs: list[bytes], total: int, concurrency: int,
                    timeout: float, offset: int = 0, hostile: dict[str, Any] | None = None,
                    fraction: float = 0.0) -> tuple[list[dict[str, Any]], float]:
    """``total`` requests, ``concurrency`` in flight; returns one record per request and the
    wall time. With ``hostile``, a ``fraction`` of the requests (spread evenly) send those, in
    turn (bytes: an upload to the endpoint; a dict: httpx arguments with a ``path``); each
    record's ``kind`` says which (``normal`` for the others)."""
    import httpx

    records: list[dict[str, Any]] = []
    next_index = 0
    kinds = list(hostile or {})

    def upload(i: int) -> tuple[str, Any]:
        # request i is hostile when the running count of hostile ones steps up at i
        if kinds and int((i + 1) * fraction) > int(i * fraction):
            kind = kinds[int(i * fraction) % len(kinds)]
            return kind, hostile[kind]  # type: ignore[index]
        return "normal", pngs[(offset + i) % len(pngs)]

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < total:
            i = next_index
            next_index += 1
            kind, png = upload(i)
            start = time.perf_counter()
            record: dict[str, Any] = {"status": None, "batch_size": None, "error": None,
                                      "kind": kind}
            try:
                if isinstance(png, dict):
                    r = await client.post(f"{url}{png['path']}", content=png["content"],
                                          headers=png["headers"])
                else:
                    r = await client.post(f"{url}/v1/{endpoint}",
                                          files={"file": (f"{kind}-{i}.png", png, "image/png")})
                record["status"] = r.status_code
                if "x-batch-size" in r.headers:
                    record["batch_size"] = int(r.headers["x-batch-size"])
                if r.status_code != 200:
                    record["error"] = r.text[:300]
            except httpx.HTTPError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            record["latency_ms"] = (time.perf_counter() - start) * 1000
            records.append(record)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        wall = time.perf_counter() - start
    return records, wall


def summarize(records: list[dict[str, Any]], wall: float, before: dict[str, Any],
              after: dict[str, Any]) -> dict[str, Any]:
    """Status codes over all requests; latency, failures and batch sizes of the normal ones;
    the hostile answers by kind."""
    import numpy as np

    hostile = [r for r in records if r.get("kind", "normal") != "normal"]
    records = [r for r in records if r.get("kind", "normal") == "normal"]
    codes = Counter(str(r["status"]) if r["status"] is not None else "connection-error"
                    for r in records + hostile)
    ok = [r["latency_ms"] for r in records if r["status"] == 200]
    pct = np.percentile(ok, [50, 95, 99]).tolist() if ok else [float("nan")] * 3
    header_sizes = [r["batch_size"] for r in records if r["batch_size"] is not None]
    batches = after["batches"] - before["batches"]
    images = after["images"] - before["images"]
    hist: Counter[int] = Counter()
    for size, n in after["batch_sizes"].items():
        hist[int(size)] += n - before["batch_sizes"].get(size, 0)
    return {
        "status_codes": dict(sorted(codes.items())),
        "server_errors": sum(n for c, n in codes.items() if c.startswith("5")),
        "connection_errors": codes.get("connection-error", 0),
        "failed": sum(1 for r in records if r["status"] != 200),
        "normal_requests": len(records),
        "hostile_requests": len(hostile),
        "hostile_answers": {kind: dict(Counter(str(r["status"]) for r in hostile
                                               if r["kind"] == kind))
                            for kind in dict.fromkeys(r["kind"] for r in hostile)},
        "hostile_latency_ms_max": round(max(r["latency_ms"] for r in hostile), 2)
        if hostile else None,
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(records) / wall, 2),
        "latency_ms": {"p50": round(pct[0], 2), "p95": round(pct[1], 2),
                       "p99": round(pct[2], 2), "max": round(max(ok), 2) if ok else None},
        "mean_x_batch_size": round(float(np.mean(header_sizes)), 3) if header_sizes else None,
        "server_batches": batches,
        "server_images": images,
        "mean_batch_size_formed": round(images / batches, 3) if batches else None,
        "batch_size_histogram": {str(k): v for k, v in sorted(hist.items()) if v},
        "first_errors": [r["error"] for r in records if r["error"]][:5],
    }


async def sigterm_under_load(proc: subprocess.Popen, url: str, endpoint: str, pngs: list[bytes],
                             concurrency: int, timeout: float) -> dict[str, Any]:
    """SIGTERM while ``concurrency`` normal requests are in flight: the answers by status (or
    the connection error's name) and the seconds until the server exited (None: it did not
    within 30 s)."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        requests = [asyncio.ensure_future(client.post(
            f"{url}/v1/{endpoint}", files={"file": (f"t{i}.png", pngs[i % len(pngs)])}))
            for i in range(concurrency)]
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*requests, return_exceptions=True)
        while proc.poll() is None and time.perf_counter() - start < 30:
            await asyncio.sleep(0.05)
    exited = round(time.perf_counter() - start, 2) if proc.poll() is not None else None
    codes = Counter(str(a.status_code) if isinstance(a, httpx.Response) else type(a).__name__
                    for a in answers)
    return {"answers": dict(sorted(codes.items())), "exit_s": exited}


def server_rss_mb(pid: int) -> float | None:
    """Resident memory of the server process in MiB (Linux /proc), or None elsewhere."""
    status = Path(f"/proc/{pid}/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def print_summary(summary: dict[str, Any], requests: int) -> None:
    lat = summary["latency_ms"]
    print(f"status codes: {summary['status_codes']}  (5xx: {summary['server_errors']}, "
          f"connection errors: {summary['connection_errors']})")
    print(f"throughput: {summary['throughput_rps']} req/s ({requests} in "
          f"{summary['wall_s']} s)")
    print(f"latency ms (normal requests): p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  "
          f"max {lat['max']}")
    if summary["hostile_requests"]:
        print(f"hostile: {summary['hostile_requests']} requests, slowest answer "
              f"{summary['hostile_latency_ms_max']} ms; answers by kind "
              f"{summary['hostile_answers']}")
    print(f"batch size: mean X-Batch-Size per request {summary['mean_x_batch_size']}; "
          f"mean batch formed (/v1/stats) {summary['mean_batch_size_formed']} "
          f"({summary['server_images']} images in {summary['server_batches']} batches)")
    print(f"batch sizes formed: {summary['batch_size_histogram']}")
    for err in summary["first_errors"]:
        print(f"error: {err}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import httpx

    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    server_threads = (str(args.server_threads) if args.server_threads
                      else os.environ.get("OMP_NUM_THREADS", f"unset (torch picks, {cpus} cores)"))
    print(f"command: {command}")
    print(f"cpu: {cpus} cores usable (os.cpu_count {os.cpu_count()}); server OMP_NUM_THREADS="
          f"{server_threads}; client: 1 asyncio thread", flush=True)
    with tempfile.TemporaryDirectory(prefix="enfold-serve-load-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = build_model(args, work)
        log = work / "server.log"
        proc, url = start_server(args, model, log)
        try:
            meta = httpx.get(f"{url}/v1/metadata", timeout=30).json()
            served = [e.removeprefix("/v1/") for e in meta["endpoints"]]
            endpoint = args.endpoint or next((e for e in ("restore", "classify", "energy")
                                              if e in served), "none")
            if endpoint not in served:
                sys.exit(f"{model} serves {', '.join(meta['targets'])}: no /v1/{endpoint}")
            size = args.upload_size or int(meta["img_size"])
            pngs = uploads(size, int(meta["in_chans"]), args.requests)
            print(f"server: {meta['backend']}; model {model}; listening on {url}")
            print(f"load: POST /v1/{endpoint}, {args.requests} requests, {args.concurrency} "
                  f"concurrent, max batch {args.max_batch}, max wait {args.max_wait_ms:g} ms, "
                  f"{len(pngs)} distinct {size}x{size} held-out digit PNGs", flush=True)
            warmup = args.concurrency if args.warmup is None else args.warmup
            if warmup:
                asyncio.run(load_test(url, endpoint, pngs, warmup, args.concurrency,
                                      args.timeout))
            def run_once(hostile: dict[str, Any] | None) -> dict[str, Any]:
                before = httpx.get(f"{url}/v1/stats", timeout=30).json()[endpoint]
                rss_before = server_rss_mb(proc.pid)
                records, wall = asyncio.run(load_test(
                    url, endpoint, pngs, args.requests, args.concurrency, args.timeout,
                    hostile=hostile, fraction=args.hostile if hostile else 0.0))
                after = httpx.get(f"{url}/v1/stats", timeout=30).json()[endpoint]
                summary = summarize(records, wall, before, after)
                summary["rss_mb"] = {"before": rss_before, "after": server_rss_mb(proc.pid)}
                return summary

            summary = run_once(None)
            hostile_summary = None
            sigterm = None
            if args.hostile > 0:
                bad: dict[str, Any] = dict(hostile_uploads(int(meta["max_upload_bytes"])))
                index = httpx.post(f"{url}/v2/repository/index", timeout=30).json()
                v2_model = index[0]["name"]
                v2_meta = httpx.get(f"{url}/v2/models/{v2_model}", timeout=30).json()
                bad.update(hostile_v2_bodies(v2_model, v2_meta["inputs"][0]["shape"][1:],
                                             int(meta["max_upload_bytes"])))
                idle = open_idle_connections(url, args.idle_connections)
                print(f"hostile run: {len(idle)} idle and slow connections open", flush=True)
                try:
                    hostile_summary = run_once(bad)
                finally:
                    for sock in idle:
                        sock.close()
                hostile_summary["idle_connections"] = len(idle)
            alive = httpx.get(f"{url}/healthz", timeout=30).status_code == 200
            if args.hostile > 0:
                sigterm = asyncio.run(sigterm_under_load(proc, url, endpoint, pngs,
                                                         args.concurrency, args.timeout))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        summary["healthy_after"] = alive
    print("-- clean run")
    print_summary(summary, args.requests)
    failed = bool(summary["failed"] or summary["server_errors"] or not alive)
    report = {"command": command, "cpus": cpus, "server_omp_threads": server_threads,
              "model": model, "backend": meta["backend"], "endpoint": endpoint,
              "requests": args.requests, "concurrency": args.concurrency,
              "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
              "upload_size": size, "warmup": warmup, **summary}
    if hostile_summary is not None:
        print(f"-- hostile run: {args.hostile:.0%} of the uploads hostile")
        print_summary(hostile_summary, args.requests)
        p99_clean = summary["latency_ms"]["p99"]
        p99_hostile = hostile_summary["latency_ms"]["p99"]
        rss = hostile_summary["rss_mb"]
        checks = {
            "no_5xx": hostile_summary["server_errors"] == 0,
            "normal_requests_all_200": hostile_summary["failed"] == 0,
            "p99_within_2x_clean": p99_hostile <= 2 * p99_clean,
            "rss_after_within_20pct": (rss["before"] is None or
                                       rss["after"] <= 1.2 * rss["before"]),
        }
        ratio = p99_hostile / p99_clean if p99_clean else float("nan")
        rss_text = (f"{rss['before']:.0f} -> {rss['after']:.0f} MiB"
                    if rss["before"] is not None else "n/a")
        print(f"hostile vs clean: normal p99 {p99_hostile} vs {p99_clean} ms "
              f"({ratio:.2f}x); server RSS {rss_text}; checks {checks}")
        if sigterm is not None:
            print(f"SIGTERM with {args.concurrency} requests in flight: answers "
                  f"{sigterm['answers']}; exited after {sigterm['exit_s']} s")
            checks["sigterm_answers_200_or_503"] = set(sigterm["answers"]) <= {"200", "503"}
            checks["sigterm_exit_within_drain_plus_5s"] = (sigterm["exit_s"] is not None and
                                                           sigterm["exit_s"] <= 10.0)
            print(f"checks with SIGTERM: {checks}")
        report["hostile"] = {"fraction": args.hostile, **hostile_summary, "checks": checks,
                             "p99_ratio": round(ratio, 3), "sigterm": sigterm}
        failed = failed or not all(checks.values())
    print(f"/healthz after the runs: {'ok' if alive else 'FAILED'}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
