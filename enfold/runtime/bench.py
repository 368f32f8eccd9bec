"""``enfold bench``: every available backend on one artifact, side by side, in one process.

Each (batch size, backend) pair is timed through the same ``enfold.runtime`` call users make, so
the numbers include normalisation and host copies for every backend alike. Latency is per call;
images/s is batch / mean latency; ``speedup`` is PyTorch eager's p50 over the backend's p50
(above 1: faster than eager).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from enfold.artifact.formats import BACKENDS
from enfold.errors import EnfoldError
from enfold.runtime.session import TARGET_METHODS, load

ROUNDS = 5  # bursts per backend and batch size, interleaved


def parse_batches(text: str, option: str = "--batch") -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]``, or an error naming ``option``."""
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError as exc:
        raise EnfoldError(f"{option} {text!r} must be comma-separated integers, e.g. 1,8,32"
                          ) from exc
    if not sizes or min(sizes) < 1:
        raise EnfoldError(f"{option} {text!r}: give batch sizes of at least 1")
    return sizes


def time_calls(fn, x: np.ndarray, seconds: float, warmup: int = 3,
               min_calls: int = 5) -> list[float]:
    """Seconds per call: ``warmup`` untimed calls, then calls until ``seconds`` have passed."""
    for _ in range(warmup):
        fn(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _worker(conn: Connection, model: str, backend: str, device: str | None) -> None:
    """One backend in its own process: load, then time whatever the parent asks for.

    Separate processes keep the backends' thread pools apart: in one process, PyTorch's OpenMP
    threads still spinning after a call take the cores from ONNX Runtime's pool and halve its
    measured speed on a 2-core machine, which is not what a deployment of either would see.
    """
    try:
        session = load(model, backend=backend, device=device)
    except EnfoldError as exc:
        conn.send({"error": str(exc).splitlines()[0]})
        return
    target = session.metadata.target
    runner = session.runners[target]
    conn.send({"detail": session.describe(), "target": target, "in_chans": session.in_chans,
               "img_size": session.img_size, "fixed_batch": runner.fixed_batch})
    fn = getattr(session, TARGET_METHODS[target])
    while (msg := conn.recv()) is not None:
        x, seconds, warmup = msg
        conn.send(time_calls(fn, x, seconds, warmup=warmup, min_calls=2))


def bench(model: str | Path, backends: list[str] | None = None, batches: list[int] = (1, 8, 32),
          seconds: float = 3.0, device: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Measure each backend that loads; returns rows and the backends skipped (with reasons).

    Every backend runs in its own process; the parent hands out short timing bursts in turn
    (round-robin), so only one backend runs at a time and drift in the machine's load hits
    every backend alike.
    """
    wanted = list(backends) if backends else list(BACKENDS)
    unknown = sorted(set(wanted) - set(BACKENDS))
    if unknown:
        raise EnfoldError(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    if "torch" not in wanted:  # every ratio is to eager PyTorch, so it always runs
        wanted.insert(0, "torch")
    ctx = mp.get_context("spawn")
    workers: dict[str, tuple[Any, Connection, dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    try:
        for name in wanted:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, str(model), name, device),
                               daemon=True)
            proc.start()
            info = parent.recv()
            if "error" in info:
                skipped[name] = info["error"]
                proc.join()
            else:
                workers[name] = (proc, parent, info)
        if "torch" not in workers:
            raise EnfoldError(f"PyTorch eager cannot run {model}: {skipped['torch']}")
        info = workers["torch"][2]
        rng = np.random.default_rng(seed)
        rows: list[dict[str, Any]] = []
        for batch in batches:
            x = rng.random((batch, info["in_chans"], info["img_size"], info["img_size"]),
                           np.float32)
            times: dict[str, list[float]] = {name: [] for name in workers}
            for r in range(ROUNDS):
                for name, (_, conn, _) in workers.items():
                    conn.send((x, seconds / ROUNDS, 3 if r == 0 else 1))
                    times[name] += conn.recv()
            eager_p50 = percentile(times["torch"], 50)
            for name, (_, _, winfo) in workers.items():
                p50 = percentile(times[name], 50)
                fixed = winfo["fixed_batch"]
                rows.append({
                    "backend": name, "detail": winfo["detail"], "batch": batch,
                    "calls": len(times[name]), "p50_ms": p50 * 1e3,
                    "p95_ms": percentile(times[name], 95) * 1e3,
                    "images_per_s": batch / statistics.fmean(times[name]),
                    "speedup_vs_torch": eager_p50 / p50,
                    "note": f"fixed batch {fixed}: padded" if fixed and fixed != batch else "",
                })
    finally:
        for proc, conn, _ in workers.values():
            conn.send(None)
            proc.join(timeout=30)
    return {
        "model": str(model), "target": info["target"], "seconds_per_point": seconds,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "rows": rows, "skipped": skipped,
    }


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width table of ``bench``'s rows, then the skipped backends."""
    head = (f"{'backend':<12} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} {'img/s':>9} "
            f"{'vs eager':>9}  detail")
    lines = [f"{report['target']} {report['model']} ({report['machine']['torch_threads']} torch "
             f"threads)", head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(f"{r['backend']:<12} {r['batch']:>5} {r['p50_ms']:>9.3f} "
                     f"{r['p95_ms']:>9.3f} {r['images_per_s']:>9.1f} "
                     f"{r['speedup_vs_torch']:>8.2f}x  {r['detail']}"
                     + (f" [{r['note']}]" if r["note"] else ""))
    for name, why in report["skipped"].items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)
