"""What a statement imports, run in a fresh interpreter (the import is what is tested)."""

from __future__ import annotations

import subprocess
import sys


def imported_after(statement: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules whose names start with one of ``prefixes`` (or equal one) that are loaded
    after running ``statement`` in a fresh interpreter."""
    probe = (f"import sys; {statement}; "
             f"print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return eval(out.strip())  # a printed list of module names
