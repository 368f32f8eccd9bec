"""``--out`` checked before any work: a folder that is a file, or a place nobody can write, is one
clear error instead of a traceback after minutes of training or export."""

from __future__ import annotations

import os
from pathlib import Path

from enfold.errors import EnfoldError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing parent (where a missing folder would be created)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out_dir(out: Path, option: str = "--out") -> Path:
    """``out`` as a folder to write in: it is a folder (or can be created) and is writable."""
    if out.exists() and not out.is_dir():
        raise EnfoldError(f"{option} {out} is an existing file, not a folder; pass a folder "
                          "(it is created when missing)")
    base = _nearest_existing(out)
    if not base.is_dir():
        raise EnfoldError(f"{option} {out} cannot be created: {base} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise EnfoldError(f"{option} {out} is not writable ({base} does not allow writing); "
                          "pass a folder you can write to")
    return out


def check_out_file(out: Path, option: str = "--out") -> Path:
    """``out`` as a file to write: not a folder, and its folder can be created and written."""
    if out.is_dir():
        raise EnfoldError(f"{option} {out} is a folder; pass a file name (inside it, or "
                          "anywhere else)")
    if out.exists() and not os.access(out, os.W_OK):
        raise EnfoldError(f"{option} {out} exists and is not writable")
    check_out_dir(out.parent, option=f"the folder of {option}")
    return out
