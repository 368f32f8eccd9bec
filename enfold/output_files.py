"""Writing result files into a user's ``--out``: never through a link, never over an input, never
over an existing file unless the user said ``--overwrite``.

Every output is written to a temporary file in its own folder and moved into place with
``os.replace``. The rename replaces the directory entry, not the file it named: a symlink or a
hard link sitting at an output's name is itself replaced and the file it pointed at (an input,
or anything else on disk) keeps its bytes. A half-written output never appears under its name.

The overwrite policy is one rule for every command: the outputs a command is about to write are
listed before any work (:func:`refuse_existing`), and if any exists the command stops with one
error naming them, unless ``--overwrite`` was given.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from enfold.errors import OutputExistsError, OutputWriteError

SHOWN = 5  # existing outputs named in the refusal; the rest are counted


def file_identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file ``path`` names (links followed), or ``None`` when it names
    nothing. Two names with one identity are one file: a hard link or a symlink."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def entry_identity(path: Path) -> tuple[int, int, str] | None:
    """The directory entry ``path`` is, however it is spelled: its folder's identity and its
    name (``None`` when the folder does not exist). Replacing this entry replaces that name."""
    folder = file_identity(Path(path).parent)
    return None if folder is None else (*folder, Path(path).name)


def existing_outputs(paths: Iterable[Path]) -> list[Path]:
    """The planned outputs that something already occupies: a file, a link (even a dangling
    one), a FIFO. Folders are left out: they are never replaced, and writing there is an error
    of that one output (:func:`write_output`)."""
    found = []
    for path in paths:
        try:
            st = os.lstat(path)
        except (OSError, ValueError):
            continue
        if not stat.S_ISDIR(st.st_mode):
            found.append(path)
    return found


def refuse_existing(paths: Iterable[Path], overwrite: bool, option: str = "--out") -> None:
    """Before any work: raise :class:`OutputExistsError` naming the planned outputs that already
    exist, unless ``overwrite``."""
    if overwrite:
        return
    taken = existing_outputs(paths)
    if taken:
        shown = ", ".join(str(p) for p in taken[:SHOWN])
        more = f" and {len(taken) - SHOWN} more" if len(taken) > SHOWN else ""
        raise OutputExistsError(f"{len(taken)} output file(s) already exist: {shown}{more}; "
                                f"pass --overwrite or choose another {option}")


def write_output(path: Path, data: bytes | str | Callable[[IO[bytes]], object],
                 protect: Iterable[tuple[int, int, str] | None] = ()) -> Path:
    """Write ``data`` (bytes, text, or a function writing to a binary file) to ``path`` through
    a temporary file in the same folder and ``os.replace``.

    ``protect``: the directory entries (:func:`entry_identity`) of inputs; writing to one of
    those names is refused (a link elsewhere to an input is only replaced, never written
    through, so it needs no guard).
    A folder at ``path`` or a failed write raises :class:`OutputWriteError` naming ``path``;
    the temporary file never stays behind.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputWriteError(f"cannot write {path}: a folder has that name; move it away or "
                               "choose another --out")
    if st is not None and entry_identity(path) in set(protect):
        raise OutputWriteError(f"refusing to write {path}: it is one of the inputs")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is for secrets, not results
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def clear_outputs(paths: Iterable[Path]) -> None:
    """Remove the names (never the files links point to) at ``paths`` before a library that
    opens a path itself (ONNX, TorchScript) writes there, so it cannot write through a link."""
    for path in existing_outputs(paths):
        try:
            os.unlink(path)
        except OSError as exc:
            raise OutputWriteError(f"cannot replace {path}: {exc.strerror or exc}") from exc

