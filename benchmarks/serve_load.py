"""Load test for ``enfold serve``: a bounded number of real uploads against a loopback server.

    python benchmarks/serve_load.py                          # trains + exports a tiny restorer
    python benchmarks/serve_load.py --model exported/restorer-k2.onnx --requests 500 \
        --concurrency 16 --max-batch 16 --max-wait-ms 5 --out serve-load.json
    python benchmarks/serve_load.py --checkpoint runs/ft/checkpoint-last.pt   # exports, serves

The server runs in a child process on a free 127.0.0.1 port (never another interface); the
client keeps ``--concurrency`` requests in flight until ``--requests`` have been answered, each
uploading a PNG of a held-out digit (scikit-learn's test split, never seen in training). It
reports the status codes, throughput, latency percentiles and the batch sizes the server formed
(from the ``X-Batch-Size`` headers and from ``/v1/stats``). The exit status is 1 when any
request failed: a 5xx, a connection error, or any other non-200 answer (every upload is valid).

Client and server share the machine: on a few CPU cores the client's own work is part of what
is measured, so compare numbers only between runs on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
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
    p.add_argument("--out", help="write the JSON report here")
    args = p.parse_args(argv)
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
    from enfold.export.export import export_artifact
    from enfold.pipeline.checkpoint import load_checkpoint

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


async def load_test(url: str, endpoint: str, pngs: list[bytes], total: int, concurrency: int,
                    timeout: float, offset: int = 0) -> tuple[list[dict[str, Any]], float]:
    """``total`` requests, ``concurrency`` in flight; returns one record per request and the
    wall time."""
    import httpx

    records: list[dict[str, Any]] = []
    next_index = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < total:
            i = next_index
            next_index += 1
            png = pngs[(offset + i) % len(pngs)]
            start = time.perf_counter()
            record: dict[str, Any] = {"status": None, "batch_size": None, "error": None}
            try:
                r = await client.post(f"{url}/v1/{endpoint}",
                                      files={"file": (f"digit-{i}.png", png, "image/png")})
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
    import numpy as np

    codes = Counter(str(r["status"]) if r["status"] is not None else "connection-error"
                    for r in records)
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
        "failed": sum(n for c, n in codes.items() if c != "200"),
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
            before = httpx.get(f"{url}/v1/stats", timeout=30).json()[endpoint]
            records, wall = asyncio.run(load_test(url, endpoint, pngs, args.requests,
                                                  args.concurrency, args.timeout))
            after = httpx.get(f"{url}/v1/stats", timeout=30).json()[endpoint]
            alive = httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        summary = summarize(records, wall, before, after)
        summary["healthy_after"] = alive
    lat = summary["latency_ms"]
    print(f"status codes: {summary['status_codes']}  (5xx: {summary['server_errors']}, "
          f"connection errors: {summary['connection_errors']}); /healthz after the run: "
          f"{'ok' if alive else 'FAILED'}")
    print(f"throughput: {summary['throughput_rps']} req/s ({args.requests} in "
          f"{summary['wall_s']} s)")
    print(f"latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    print(f"batch size: mean X-Batch-Size per request {summary['mean_x_batch_size']}; "
          f"mean batch formed (/v1/stats) {summary['mean_batch_size_formed']} "
          f"({summary['server_images']} images in {summary['server_batches']} batches)")
    print(f"batch sizes formed: {summary['batch_size_histogram']}")
    for err in summary["first_errors"]:
        print(f"error: {err}")
    report = {"command": command, "cpus": cpus, "server_omp_threads": server_threads,
              "model": model, "backend": meta["backend"], "endpoint": endpoint,
              "requests": args.requests, "concurrency": args.concurrency,
              "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
              "upload_size": size, "warmup": warmup, **summary}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.out}")
    return 1 if summary["failed"] or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
