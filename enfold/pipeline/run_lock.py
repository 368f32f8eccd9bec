"""One training run per run folder: ``OUT/.lock``, held (``fcntl.flock``) for the whole run.

Two ``enfold pretrain`` (or ``finetune``) on one ``--out`` would interleave their checkpoints,
config and metrics; the second one stops at once instead, naming the process that holds the
folder. The kernel drops the lock when its holder exits, however it exits, so a killed run never
leaves a folder locked; the file itself stays (removing it could let a third run lock a
different file than the second).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from enfold.errors import EnfoldError, RunLockedError

LOCK_NAME = ".lock"


@contextmanager
def run_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``out_dir`` (created when missing) for the ``with`` block, or
    raise :class:`RunLockedError` at once when another process holds it."""
    import fcntl

    out_dir = Path(out_dir)
    path = out_dir / LOCK_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise EnfoldError(f"cannot lock the run folder {out_dir}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(
                f"{out_dir} is in use by another training run (pid {holder} holds {path}); "
                "wait for it to finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing drops the lock
