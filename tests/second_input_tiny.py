"""Tiny restorers that take a second graph input, made once per test session and shared by the
Triton repository and Open Inference Protocol tests of that input: a noise-level restorer
(``sigma``, exported to ONNX and TorchScript) and a mask restorer with data consistency
(``mask``, served from its checkpoint). Three training steps each: the subject is the plumbing
of the inputs, not the restoration."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import DIGITS_TINY, TINY, train

SHORT = [*TINY, "train.max_steps=3", "eval.every=0"]
NOISE_LEVEL = [*SHORT, "corrupt.tasks=[noise]", "corrupt.noise.sigma=0.02",
               "corrupt.noise.sigma_max=0.2", "model.noise_level_input=true"]
MASK = [*SHORT, "corrupt.tasks=[mask]", "model.consistency=true"]
BATCH = "1:4:8"  # max_batch_size 8; the traced TorchScript restorer is fixed to 4
_SHARED: dict[str, Any] = {}


def second_input_models(tmp_path_factory) -> dict[str, Any]:
    """``{"noise": ckpt, "mask": ckpt, "onnx": noise .onnx, "ts": noise .ts, "root": dir}``,
    made on first use (unvalidated exports: tests/test_restore_noise_level.py validates)."""
    if not _SHARED:
        from enfold.export.export import export_artifact

        root = tmp_path_factory.mktemp("second-input")
        noise = train("pretrain", DIGITS_TINY, root / "noise", NOISE_LEVEL)
        mask = train("pretrain", DIGITS_TINY, root / "mask", MASK)
        # one step: the smallest unrolled graph (the ONNX export is most of this fixture's time)
        arts = {fmt: Path(export_artifact(str(noise), "restorer", fmt, root / "exports",
                                          steps=1, batch=BATCH, validate=False)["artifact"])
                for fmt in ("onnx", "torchscript")}
        _SHARED.update(noise=noise, mask=mask, onnx=arts["onnx"], ts=arts["torchscript"],
                       root=root)
    return _SHARED


@contextlib.contextmanager
def serve_in_process(app: Any, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn in a thread of this process on a free loopback port
    and yield its URL; stopped (and the thread joined, bounded) on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
