"""Replace one marked section of docs/RESULTS.md, so each benchmark rewrites only its own table."""

from __future__ import annotations

import re
from pathlib import Path


def finished_before(run_dir: Path, max_steps: int) -> bool:
    """Whether ``run_dir`` already holds a training run at ``max_steps``, so a benchmark reads it
    back instead of training, and its reported minutes must say so."""
    from enfold.pipeline.checkpoint import load_checkpoint

    last = run_dir / "checkpoint-last.pt"
    return last.exists() and load_checkpoint(last)["step"] >= max_steps


def write_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appended if new)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text}\n{end}"
    doc = path.read_text() if path.exists() else "# Results\n"
    if start in doc:
        doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, doc,
                     flags=re.S)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
