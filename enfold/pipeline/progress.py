"""Training progress: ``metrics.jsonl`` plus a progress bar (plain lines when not on a TTY)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class MetricsLog:
    """Append-only JSON lines, one object per logged step or evaluation."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """On resume, drop records past the checkpoint: those steps will be run again."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    m, s = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """A tqdm bar on a terminal; otherwise one plain line per logged step (for log files)."""

    def __init__(self, total: int, start: int, enabled: bool = True):
        self.total, self.start, self.enabled = total, start, enabled
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="step")

    def update(self, step: int, fields: dict[str, Any], log_line: bool) -> None:
        if not self.enabled:
            return
        text = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in fields.items()}
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(text, refresh=False)
        elif log_line:
            done = step - self.start
            rate = done / max(1e-9, time.perf_counter() - self.t0)
            eta = (self.total - step) / rate if rate > 0 else float("inf")
            body = " ".join(f"{k} {v}" for k, v in text.items())
            print(f"step {step}/{self.total} {body} ETA {_fmt_seconds(eta)}", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
